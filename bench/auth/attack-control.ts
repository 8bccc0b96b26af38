// Starts the attackers' process (bench/auth/attackers.ts) with a plan, and stops it for its report.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AttackPlan, AttackResult } from './attackers.js';

const ATTACKERS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'attackers.ts');

export interface RunningAttack {
  pid: number;
  stop(): Promise<AttackResult>;
}

export async function startAttack(plan: AttackPlan): Promise<RunningAttack> {
  // execArgv is inherited: the child loads TypeScript through tsx as the bench itself does.
  const child = fork(ATTACKERS, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = once(child, 'exit');
  child.send(plan);
  const [first] = (await once(child, 'message')) as [unknown];
  if (first !== 'started') throw new Error(`the attackers answered ${JSON.stringify(first)}`);
  return {
    pid: child.pid!,
    async stop() {
      const report = once(child, 'message') as Promise<[AttackResult]>;
      child.send('stop');
      const [result] = await Promise.race([report, exited.then(() => Promise.reject(new Error('the attackers exited without a report')))]);
      await exited;
      return result;
    },
  };
}
