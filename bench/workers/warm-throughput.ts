// Warm aggregate throughput: `clients` curl loops download one big cached blob through regcache's proxy
// port (CONNECT, intercepted: TLS with a minted leaf, hashed while served) over and over for `seconds`,
// each download on a connection of its own (so that Node's cluster hands them to every worker in turn).
// MB/s = every byte downloaded over the wall time until the last download ended. curl (C, OpenSSL) keeps
// the clients' share of the 2 cores small; its CPU is reported beside regcache's.
import { spawn } from 'node:child_process';
import { exitedChildrenCpuSeconds, treeCpuSeconds } from '../measure.js';

export interface WarmOptions {
  clients: number;
  seconds: number;
}

export interface WarmResult {
  downloads: number;
  bytes: number;
  wallSeconds: number;
  megabytesPerSecond: number; // MB = 10^6 bytes
  errors: number;
  errorSamples: string[];
  regcacheCpuSeconds: number;
  clientCpuSeconds: number;
}

export interface WarmTarget {
  proxyPort: number;
  caFile: string; // regcache's CA
  url: string; // https://<allowlisted registry>/v2/.../blobs/<digest>
  size: number;
  regcachePid: number;
}

interface Download {
  bytes: number;
  error: string | null;
}

export async function measureWarmThroughput(target: WarmTarget, opts: WarmOptions): Promise<WarmResult> {
  const deadline = Date.now() + opts.seconds * 1000;
  const downloads: Download[] = [];
  const [cpu0, clients0] = [(await treeCpuSeconds(target.regcachePid)) ?? NaN, await exitedChildrenCpuSeconds()];
  const started = Date.now();
  const loop = async (): Promise<void> => {
    while (Date.now() < deadline) downloads.push(await curl(target));
  };
  await Promise.all(Array.from({ length: opts.clients }, loop));
  const wallSeconds = (Date.now() - started) / 1000;
  const [cpu1, clients1] = [(await treeCpuSeconds(target.regcachePid)) ?? NaN, await exitedChildrenCpuSeconds()];
  const failed = downloads.filter((d) => d.error !== null);
  const bytes = downloads.reduce((n, d) => n + d.bytes, 0);
  return {
    downloads: downloads.length,
    bytes,
    wallSeconds,
    megabytesPerSecond: bytes / 1e6 / wallSeconds,
    errors: failed.length,
    errorSamples: failed.slice(0, 3).map((d) => d.error!),
    regcacheCpuSeconds: cpu1 - cpu0,
    clientCpuSeconds: clients1 - clients0, // the curl processes, reaped
  };
}

/** One download; the body goes to /dev/null, its size and status are checked. */
function curl(target: WarmTarget): Promise<Download> {
  const args = [
    '-sS',
    '-o',
    '/dev/null',
    '--proxy',
    `http://127.0.0.1:${target.proxyPort}`,
    '--cacert',
    target.caFile,
    '-w',
    '%{http_code} %{size_download}',
    target.url,
  ];
  return new Promise((resolve) => {
    const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('error', (e) => resolve({ bytes: 0, error: `curl: ${e.message}` }));
    child.once('close', (code) => {
      const [status, size] = out.trim().split(' ').map(Number);
      if (code !== 0 || status !== 200 || size !== target.size)
        resolve({ bytes: size ?? 0, error: `exit ${code}, status ${status}, ${size} of ${target.size} bytes ${err.trim()}` });
      else resolve({ bytes: size, error: null });
    });
  });
}
