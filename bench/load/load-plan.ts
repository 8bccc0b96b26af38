// What the bench asks of the load generator and what it answers, and running it: the generator is a
// child process of its own (bench/load/generator.ts), so that its CPU and file descriptors are its
// own and not the bench's or regcache's. It still competes for the same 2 cores.
import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Endpoint, FailureKind } from './http1-connection.js';

export interface PlannedRequest {
  path: string;
  digest: string; // what the body must hash to
}

export interface ClassPlan {
  name: string;
  connections: number;
  endpoint: Endpoint;
  /** true: each connection issues GETs back to back; false: a new connection (CONNECT, TLS) per request. */
  keepAlive: boolean;
  headers: Record<string, string>;
  requests: PlannedRequest[];
  /** true: each request is issued once (new digests, MISSes); the class stops when they run out. false: cycled. */
  once: boolean;
}

export interface LoadPlan {
  classes: ClassPlan[];
  durationMs: number;
  maxRequests: number; // over all classes; whichever of the two bounds comes first
  timeoutMs: number; // per request, and per connection set-up
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export interface ClassResult {
  name: string;
  connections: number;
  requests: number; // answered 200 with the right bytes
  errors: number;
  errorsByKind: Partial<Record<FailureKind, number>>;
  errorSamples: string[]; // the first few messages
  latencyMs: Percentiles; // successful requests: request written to last body byte (tunnels: CONNECT to last byte)
  setupMs: Percentiles | null; // keep-alive connections: TCP + CONNECT + TLS (opened before the timed phase)
  connects: number;
  bytes: number;
  ranOut: boolean; // a once-only class used up its requests
}

export interface LoadResult {
  setupWallMs: number; // opening every keep-alive connection, before the timed phase
  wallMs: number; // the timed phase
  cpuSeconds: number; // the generator's own user + system time
  openFilesLimit: number;
  classes: ClassResult[];
}

const GENERATOR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'generator.ts');

/** Runs the plan in a fresh generator process and returns what it measured. */
export function runLoad(plan: LoadPlan): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    // execArgv is inherited: the child loads TypeScript through tsx as the bench itself does.
    const child = fork(GENERATOR, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let result: LoadResult | null = null;
    child.once('message', (m) => (result = m as LoadResult));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (result) resolve(result);
      else reject(new Error(`load generator exited (${code ?? signal}) without a result`));
    });
    child.send(plan);
  });
}
