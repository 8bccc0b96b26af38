// Measuring helpers for the benchmarks: statistics, peak RSS and CPU from /proc, pulled-image checks, a
// timed one-shot HTTPS request (optionally through a CONNECT proxy), the machine's description, the
// runner the benches share and their sections of docs/benchmarks.md.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TmpDirs } from '../test/harness/tmp.js';
import { pipeline } from 'node:stream/promises';
import tls from 'node:tls';
import type { Image } from '../test/harness/images.js';
import type { LogLine, Regcache } from '../test/harness/regcache.js';
import { waitFor } from '../test/harness/proc.js';

/** A positive integer from the environment variable `name`, or `fallback` when it is unset or empty. */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  const n = Number(raw === undefined || raw.trim() === '' ? fallback : raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** VmHWM (peak RSS) and VmRSS of a live process in MB; null once it has exited. */
export async function memoryMb(pid: number): Promise<{ peak: number; now: number } | null> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  if (status === null) return null;
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { peak: kb('VmHWM') / 1024, now: kb('VmRSS') / 1024 };
}

/** Live processes whose parent is pid (from /proc/<n>/stat), e.g. a server's helper programs. */
export async function childPids(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => null);
    // Fields after "(comm)": state, then ppid.
    if (stat !== null && Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) children.push(Number(name));
  }
  return children;
}

/**
 * Peak RSS (VmHWM) in MB of a live process, and summed over it and its direct children (helpers). The sum
 * overstates what the tree ever held at once (each peak may come at a different time) and counts shared
 * pages in each process: an upper bound. null once the process has exited.
 */
export async function treePeakMb(pid: number): Promise<{ main: number; withChildren: number; processes: number } | null> {
  const main = await memoryMb(pid);
  if (main === null) return null;
  let sum = main.peak;
  let processes = 1;
  for (const child of await childPids(pid)) {
    const mem = await memoryMb(child);
    if (mem === null) continue;
    sum += mem.peak;
    processes++;
  }
  return { main: main.peak, withChildren: sum, processes };
}

/**
 * Stops a bench's regcache and returns its peak RSS in MB (read just before, while /proc still has it);
 * drops it from the bench's set of running processes. Throws if it had already exited.
 */
export async function stopRegcache(rc: Regcache, what: string, running: Set<Regcache>): Promise<number> {
  const mem = await memoryMb(rc.daemon.pid);
  if (mem === null || !rc.daemon.isRunning()) throw new Error(`regcache (${what}) exited during the bench; log: ${rc.logFile}`);
  await rc.stop();
  running.delete(rc);
  return mem.peak;
}

/** CPU time (user + system) a live process has used so far, in seconds; null once it has exited. */
export async function cpuSeconds(pid: number): Promise<number | null> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (stat === null) return null;
  // Fields after "(comm)": state is the first, utime and stime the 12th and 13th, in clock ticks (USER_HZ = 100).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * CPU seconds of a live process and its live children (regcache with WORKERS > 1: the primary and its
 * workers); null once the process itself has exited. A child that exited in between takes its CPU along.
 */
export async function treeCpuSeconds(pid: number): Promise<number | null> {
  const main = await cpuSeconds(pid);
  if (main === null) return null;
  let sum = main;
  for (const child of await childPids(pid)) sum += (await cpuSeconds(child)) ?? 0;
  return sum;
}

/** memoryMb summed over a live process and its live children (each peak counted: an upper bound); null once it has exited. */
export async function treeMemoryMb(pid: number): Promise<{ peak: number; now: number } | null> {
  const main = await memoryMb(pid);
  if (main === null) return null;
  const sum = { ...main };
  for (const child of await childPids(pid)) {
    const mem = await memoryMb(child);
    sum.peak += mem?.peak ?? 0;
    sum.now += mem?.now ?? 0;
  }
  return sum;
}

/** Open descriptors of a process and its children. */
export async function treeOpenFds(pid: number): Promise<number> {
  let n = 0;
  for (const p of [pid, ...(await childPids(pid))]) n += (await readdir(`/proc/${p}/fd`).catch(() => [])).length;
  return n;
}

/** User and system CPU time a live process has used so far, in seconds; null once it has exited. */
export async function cpuTimes(pid: number): Promise<{ user: number; system: number } | null> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (stat === null) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
}

/** CPU time of this process's children that have exited and been waited for (cutime + cstime), in seconds. */
export async function exitedChildrenCpuSeconds(): Promise<number> {
  const stat = await readFile('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return `sha256:${hash.digest('hex')}`;
}

/** skopeo's dir: layout holds manifest.json and one file per blob named by hex digest; null when all match. */
export async function checkPulledImage(outDir: string, image: Image): Promise<string | null> {
  const manifest = await readFile(path.join(outDir, 'manifest.json')).catch(() => null);
  if (manifest === null || !manifest.equals(image.manifest)) return 'manifest.json differs from the pushed manifest';
  for (const blob of [image.config, ...image.layers]) {
    const file = path.join(outDir, blob.digest.replace(/^sha256:/, ''));
    const actual = await sha256File(file).catch((err: Error) => `unreadable (${err.message})`);
    if (actual !== blob.digest) return `blob ${blob.digest} hashes to ${actual}`;
  }
  return null;
}

/**
 * The blob GETs regcache logged since log line `since`, once every digest has one (or after 5 s): a request
 * line is written when its response closes, which can be a moment after the client exits.
 */
export async function blobGetLines(rc: Regcache, since: number, digests: string[], what: string): Promise<LogLine[]> {
  let lines: LogLine[] = [];
  await waitFor(
    async () => {
      lines = (await rc.requests(since)).filter((l) => l.kind === 'blob' && l.method === 'GET');
      return digests.every((d) => lines.some((l) => l.digest === d));
    },
    { timeoutMs: 5000, what: `${what}: request lines`, intervalMs: 50 },
  ).catch(() => undefined);
  return lines;
}

export interface TimedGetOptions {
  host: string; // TLS server name and Host header
  port: number; // where TLS ends: the registry's port, or the CONNECT target port through a proxy
  ca: string; // PEM the server certificate must chain to
  proxyPort?: number; // CONNECT through 127.0.0.1:proxyPort
}

/**
 * One GET /v2/ on a fresh connection (TCP, CONNECT, TLS, request, whole response), timed from the
 * first byte we send to the last byte received. Raw sockets: no client pool or lazy setup in the way.
 */
export async function timedGet(opts: TimedGetOptions): Promise<{ ms: number; status: number }> {
  const signal = AbortSignal.timeout(10_000);
  const started = performance.now();
  const socket = net.connect(opts.proxyPort ?? opts.port, '127.0.0.1');
  socket.setNoDelay(true);
  socket.setTimeout(10_000, () => socket.destroy(new Error('timed out')));
  try {
    await once(socket, 'connect', { signal });
    if (opts.proxyPort !== undefined) {
      socket.write(`CONNECT ${opts.host}:${opts.port} HTTP/1.1\r\nHost: ${opts.host}:${opts.port}\r\n\r\n`);
      const [head] = (await once(socket, 'data', { signal })) as [Buffer];
      if (!head.toString('latin1').startsWith('HTTP/1.1 200')) throw new Error(`CONNECT refused: ${head.toString('latin1').split('\r\n')[0]}`);
    }
    const secure = tls.connect({ socket, servername: opts.host, ca: opts.ca });
    await once(secure, 'secureConnect', { signal });
    secure.write(`GET /v2/ HTTP/1.1\r\nHost: ${opts.host}\r\nConnection: close\r\n\r\n`);
    let text = '';
    for await (const chunk of secure) text += String(chunk);
    const ms = performance.now() - started;
    return { ms, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0) };
  } finally {
    socket.destroy();
  }
}

/** What a result was measured on: CPU count and model, RAM, kernel. */
export function describeMachine(): { cpus: number; cpuModel: string; ramGb: number; kernel: string } {
  return {
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model.trim() ?? '?',
    ramGb: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
  };
}

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const RESULTS_DIR = path.resolve(BENCH_DIR, 'results');
const BENCHMARKS_DOC = path.resolve(BENCH_DIR, '../docs/benchmarks.md');
// The sections benches write into docs/benchmarks.md, in the order a new file lists them.
const DOC_SECTIONS = ['store-bench', 'cpu-bench', 'peer-bench', 'warm-split', 'load-bench', 'workers-bench', 'auth-bench', 's3-bench'];

/**
 * Puts body between `<!-- name:start -->` and `<!-- name:end -->` in docs/benchmarks.md, leaving the
 * rest of the file alone. Creates the file (an intro and every bench's markers) when it is missing, and
 * appends this section's markers when the file lacks them. Returns the file's path.
 */
export async function writeDocsSection(name: string, body: string): Promise<string> {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  let doc = await readFile(BENCHMARKS_DOC, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
    const sections = DOC_SECTIONS.map((s) => `<!-- ${s}:start -->\n<!-- ${s}:end -->\n`).join('\n');
    return `# Benchmarks\n\nResults of the benchmarks under bench/ (\`npm run bench\`), each section written by the bench it names\non its last run; the JSON of every run is in bench/results/.\n\n${sections}`;
  });
  if (!doc.includes(start) || doc.indexOf(end, doc.indexOf(start)) === -1) doc = `${doc.trimEnd()}\n\n${start}\n${end}\n`;
  const from = doc.indexOf(start) + start.length;
  const before = doc.slice(0, from);
  const after = doc.slice(doc.indexOf(end, from));
  await writeFile(BENCHMARKS_DOC, `${before}\n${body.trim()}\n${after}`);
  return BENCHMARKS_DOC;
}

/**
 * Runs one benchmark in a temp dir that is removed whatever happens (Ctrl-C included), prints its report
 * and writes its JSON to bench/results/<prefix><time>.json. Exit code 1 only when something broke.
 */
export async function runBench(
  name: string,
  resultsPrefix: string,
  body: (root: string) => Promise<{ text: string; json: Record<string, unknown> }>,
): Promise<number> {
  const tmp = new TmpDirs();
  const interrupted = (): void => void tmp.cleanup().finally(() => process.exit(130));
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const started = Date.now();
    const { text, json } = await body(await tmp.make(`regcache-${name}`));
    process.stdout.write(text);
    await mkdir(RESULTS_DIR, { recursive: true });
    const file = path.join(RESULTS_DIR, `${resultsPrefix}${new Date(started).toISOString().replace(/[:.]/g, '-')}.json`);
    const wallSeconds = (Date.now() - started) / 1000;
    await writeFile(file, JSON.stringify({ date: new Date(started).toISOString(), ...json, wallSeconds }, null, 2) + '\n');
    process.stdout.write(`results: ${path.relative(process.cwd(), file)} (bench took ${wallSeconds.toFixed(0)} s)\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`regcache ${name} failed: ${(err as Error).stack ?? (err as Error).message}\n`);
    return 1;
  } finally {
    await tmp.cleanup();
  }
}
