// Runs wrk against a plain-HTTP URL and reads its report: requests/s, the latency distribution
// (--latency) and the errors it counts (socket errors, non-2xx/3xx answers).
import { run } from '../../test/harness/proc.js';

export interface WrkOptions {
  url: string;
  headers: Record<string, string>;
  threads: number;
  connections: number;
  seconds: number;
}

export interface WrkResult {
  requests: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p75: number; p90: number; p99: number };
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  non2xx3xx: number;
  errors: number; // socket errors + non-2xx/3xx answers
}

export async function runWrk(opts: WrkOptions): Promise<WrkResult> {
  const args = ['-t', String(opts.threads), '-c', String(opts.connections), '-d', `${opts.seconds}s`, '--latency'];
  for (const [name, value] of Object.entries(opts.headers)) args.push('-H', `${name}: ${value}`);
  args.push(opts.url);
  const r = await run('wrk', args, { timeoutMs: (opts.seconds + 30) * 1000 });
  if (r.code !== 0) throw new Error(`wrk ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return parseWrk(r.stdout);
}

/** wrk 4.x's text report. */
export function parseWrk(text: string): WrkResult {
  const need = (re: RegExp, what: string): RegExpExecArray => {
    const m = re.exec(text);
    if (!m) throw new Error(`cannot find ${what} in wrk's output:\n${text}`);
    return m;
  };
  const percentile = (p: number): number => {
    const m = need(new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm'), `the ${p}% latency`);
    return Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60_000 }[m[2] as 'us' | 'ms' | 's' | 'm'];
  };
  const requests = Number(need(/^\s+(\d+) requests in /m, 'the request count')[1]);
  // Absent when there were none.
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const socketErrors = { connect: Number(sock?.[1] ?? 0), read: Number(sock?.[2] ?? 0), write: Number(sock?.[3] ?? 0), timeout: Number(sock?.[4] ?? 0) };
  const non2xx3xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  return {
    requests,
    requestsPerSecond: Number(need(/^Requests\/sec:\s+([\d.]+)/m, 'Requests/sec')[1]),
    latencyMs: { p50: percentile(50), p75: percentile(75), p90: percentile(90), p99: percentile(99) },
    socketErrors,
    non2xx3xx,
    errors: Object.values(socketErrors).reduce((a, b) => a + b, 0) + non2xx3xx,
  };
}
