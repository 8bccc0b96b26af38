// The auth benchmark: regcache with PROXY_AUTH a bcrypt htpasswd (cost BENCH_AUTH_COST, 10) and the
// mirror on, one small manifest cached. An authenticated client fetches it one request after another,
// each on a new connection (so each is authenticated): with no attack, and while BENCH_AUTH_CLIENTS (50)
// attackers send distinct random wrong passwords to the same door, from one address, from one address
// each, and from a new address per attempt (which no per-address throttle can slow down: what is left
// is the bcrypt worker and its bounded queue). Both doors: the proxy (CONNECT + TLS) and the mirror
// (plain HTTP). The four conditions take turns, BENCH_AUTH_ROUNDS (3) times, BENCH_AUTH_SECONDS (10)
// in all per condition and door, so that whatever else runs on the machine meanwhile falls on all of
// them alike; each round's attackers use fresh addresses (none starts already throttled). Reported: the
// client's p50/p99 per condition and its p99 against the same door with no attack (target <= 2x), the
// attackers' attempts and what they were answered, bcrypt runs (regcache_auth_checks_total) and
// regcache's CPU.
// Any error of the measured client, or an unhealthy regcache afterwards, exits non-zero; the 2x bound is
// a target (PASS/FAIL). Results: stdout, bench/results/auth-<time>.json, and the auth-bench section of
// docs/benchmarks.md (rewritten after a run without failures). Run by `npm run bench`, or once built:
// `node --import tsx bench/auth-bench.ts`.
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { freePort } from '../test/harness/ports.js';
import { startRegcache, type Regcache } from '../test/harness/regcache.js';
import { basic } from '../test/support/credentials.js';
import { request } from '../test/support/plain-http.js';
import { startAttack } from './auth/attack-control.js';
import type { AttackAddresses } from './auth/attackers.js';
import { measureDoor, type Door } from './auth/authenticated-client.js';
import { markdownSection, textReport, type AuthBenchResult, type PhaseRow } from './auth/report.js';
import { REGISTRY_HOST, REPO, setUpBench } from './load/bench-setup.js';
import { expectDigest } from './load/digest-check.js';
import { describeMachine } from './load/machine.js';
import { cpuSeconds, envInt, runBench, writeDocsSection } from './measure.js';

const ATTACKS: AttackAddresses[] = ['one', 'per-client', 'per-attempt'];
const USER = 'bench';
const PASSWORD = 'the bench client knows this one';

function options() {
  return {
    seconds: envInt('BENCH_AUTH_SECONDS', 10),
    rounds: envInt('BENCH_AUTH_ROUNDS', 3),
    clients: envInt('BENCH_AUTH_CLIENTS', 50),
    cost: envInt('BENCH_AUTH_COST', 10),
    rampSeconds: 1, // attackers run this long before the client is measured: queues are full by then
    warmupSeconds: 2,
  };
}

/** One condition of one door, summed over its rounds. */
interface Run {
  latenciesMs: number[];
  errors: number;
  errorSamples: string[];
  attempts: number;
  attackSeconds: number;
  byStatus: Record<string, number>;
  bcryptRuns: number;
  unchecked: number;
  cpuSeconds: number;
}

function emptyRun(): Run {
  return { latenciesMs: [], errors: 0, errorSamples: [], attempts: 0, attackSeconds: 0, byStatus: {}, bcryptRuns: 0, unchecked: 0, cpuSeconds: 0 };
}

function percentile(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

let failed = false;
const status = await runBench('auth-bench', 'auth-', async (root) => {
  const opts = options();
  const machine = await describeMachine();
  const loadBefore = os.loadavg()[0]!;
  process.stderr.write('setting up: registry, image, push...\n');
  const s = await setUpBench(root);
  let rc: Regcache | null = null;
  try {
    // A few users as a team would have them, all of the same cost; an unknown user costs the same.
    const htpasswd = path.join(root, 'htpasswd');
    const users = [
      [USER, PASSWORD],
      ['ci', 'another one'],
      ['ops', 'and one more'],
    ];
    await writeFile(htpasswd, users.map(([u, p]) => `${u}:${bcrypt.hashSync(p!, opts.cost)}\n`).join(''));
    rc = await startRegcache({
      dir: path.join(root, 'regcache'),
      env: {
        ...s.regcacheEnv,
        PROXY_AUTH: htpasswd,
        ADDITIONAL_REGISTRIES: REGISTRY_HOST,
        CONNECT_TO: `${REGISTRY_HOST}:443:127.0.0.1:${s.registry.port}`,
        MIRROR_PORT: String(await freePort()),
      },
    });
    const authorization = basic(USER, PASSWORD);
    const digest = s.image.manifestDigest;
    const accept = s.image.manifestMediaType;
    const manifestPath = `/v2/${REPO}/manifests/${digest}`;
    const doors: Door[] = [
      {
        name: 'proxy',
        port: rc.port,
        path: manifestPath,
        digest,
        accept,
        authorization,
        connect: { target: `${REGISTRY_HOST}:443`, servername: REGISTRY_HOST, ca: await readFile(rc.caFile, 'utf8') },
      },
      { name: 'mirror', port: rc.mirrorPort!, path: `${manifestPath}?ns=${REGISTRY_HOST}`, digest, accept, authorization },
    ];
    // Prime: the one MISS, through the mirror; everything measured after is a HIT.
    await expectDigest(`http://127.0.0.1:${rc.mirrorPort}${doors[1]!.path}`, digest, { accept, authorization });
    for (const door of doors) await measureDoor(door, opts.warmupSeconds);

    const checks = async (): Promise<Record<string, number>> => {
      const text = (await request(rc!.port, '/metrics', { headers: { authorization } })).body;
      const out: Record<string, number> = {};
      for (const m of text.matchAll(/^regcache_auth_checks_total\{result="(\w+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
      return out;
    };
    const rows: PhaseRow[] = [];
    for (const [d, door] of doors.entries()) {
      const runs = new Map<AttackAddresses | null, Run>([null, ...ATTACKS].map((attack) => [attack, emptyRun()]));
      for (let round = 0; round < opts.rounds; round++) {
        for (const [attack, run] of runs) {
          process.stderr.write(
            `${door.name}, round ${round + 1}/${opts.rounds}: ${attack === null ? 'no attack' : `${opts.clients} attackers, ${attack}`}...\n`,
          );
          const [checks0, cpu0] = [await checks(), await cpuSeconds(rc.daemon.pid)];
          const attackers =
            attack === null
              ? null
              : await startAttack({
                  door: door.name,
                  port: door.port,
                  connectTarget: `${REGISTRY_HOST}:443`,
                  clients: opts.clients,
                  addresses: attack,
                  addressBlock: d * opts.rounds + round,
                  knownUser: USER,
                });
          if (attackers) await sleep(opts.rampSeconds * 1000);
          const measured = await measureDoor(door, opts.seconds / opts.rounds);
          const attacked = attackers ? await attackers.stop() : null;
          const [checks1, cpu1] = [await checks(), await cpuSeconds(rc.daemon.pid)];
          const delta = (result: string) => (checks1[result] ?? 0) - (checks0[result] ?? 0);
          run.latenciesMs.push(...measured.latenciesMs);
          run.errors += measured.errors;
          run.errorSamples.push(...measured.errorSamples.slice(0, 5 - run.errorSamples.length));
          if (attacked) {
            run.attempts += attacked.attempts;
            run.attackSeconds += attacked.seconds;
            for (const [answer, n] of Object.entries(attacked.byStatus)) run.byStatus[answer] = (run.byStatus[answer] ?? 0) + n;
          }
          run.bcryptRuns += delta('valid') + delta('invalid');
          run.unchecked += delta('unchecked');
          run.cpuSeconds += (cpu1 ?? NaN) - (cpu0 ?? NaN);
        }
      }
      for (const [attack, run] of runs) {
        const sorted = [...run.latenciesMs].sort((a, b) => a - b);
        rows.push({
          door: door.name,
          attack,
          requests: sorted.length,
          latencyMs: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? NaN },
          p99Ratio: NaN, // filled in below, against the door's row without attack
          errors: run.errors,
          errorSamples: run.errorSamples,
          attackers: attack === null ? null : { attempts: run.attempts, perSecond: run.attempts / run.attackSeconds, byStatus: run.byStatus },
          bcryptRuns: run.bcryptRuns,
          unchecked: run.unchecked,
          regcacheCpuSeconds: run.cpuSeconds,
        });
      }
    }
    for (const row of rows) row.p99Ratio = row.latencyMs.p99 / rows.find((r) => r.door === row.door && r.attack === null)!.latencyMs.p99;
    const health = await request(rc.port, '/healthz');
    const failures = [
      ...rows
        .filter((r) => r.errors > 0)
        .map((r) => `${r.door}, ${r.attack ?? 'no attack'}: ${r.errors} errors of the authenticated client (${r.errorSamples.join('; ')})`),
      ...(health.status === 200 && rc.daemon.isRunning() ? [] : [`regcache not healthy afterwards (/healthz ${health.status})`]),
    ];
    const result: AuthBenchResult = {
      date: new Date().toISOString(),
      machine,
      loadAverage: { before: loadBefore, after: os.loadavg()[0]! },
      options: opts,
      rows,
      failures,
    };
    failed = failures.length > 0;
    if (failed) process.stderr.write(`${failures.length} failure(s): docs/benchmarks.md left as it was\n`);
    else await writeDocsSection('auth-bench', markdownSection(result));
    return { text: textReport(result), json: { ...result } };
  } finally {
    await rc?.stop();
    await s.registry.stop();
  }
});
process.exitCode = status !== 0 ? status : failed ? 1 : 0;
