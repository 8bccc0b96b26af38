// Is regcache still well after the load? The process runs, GET /healthz (admin routes on its proxy
// port) answers 200 {"ok":true}, and its log has no error or fatal line. Also counts what it logged,
// to set beside what the generator saw.
import { request } from 'undici';
import { settledRead } from '../../test/harness/proc.js';
import type { LogLine, Regcache } from '../../test/harness/regcache.js';

export interface RegcacheHealth {
  healthy: boolean;
  running: boolean;
  healthz: string; // "200 ok", or what went wrong
  linesByLevel: Record<string, number>;
  problemLines: string[]; // the first few error/fatal lines, then warn lines
  requestLines: Record<string, number>; // "<cache> <status>" -> count
  tunnelsClosed: number;
  tunnelsWithError: number;
}

const SAMPLES = 5;

export async function checkHealth(rc: Regcache): Promise<RegcacheHealth> {
  const running = rc.daemon.isRunning();
  let healthz: string;
  let healthzOk = false;
  try {
    const res = await request(`${rc.proxyUrl}/healthz`, { headersTimeout: 5000, bodyTimeout: 5000 });
    const body = (await res.body.json()) as { ok?: boolean };
    healthzOk = res.statusCode === 200 && body.ok === true;
    healthz = `${res.statusCode} ${body.ok === true ? 'ok' : JSON.stringify(body)}`;
  } catch (err) {
    healthz = `no answer: ${(err as Error).message}`;
  }
  // Settled: a request's line is written as its response closes, the /healthz one included.
  const lines = (await settledRead(rc.logFile))
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
  const linesByLevel: Record<string, number> = {};
  const requestLines: Record<string, number> = {};
  let tunnelsClosed = 0;
  let tunnelsWithError = 0;
  const errors: string[] = [];
  const warnings: string[] = [];
  for (const line of lines) {
    linesByLevel[line.level] = (linesByLevel[line.level] ?? 0) + 1;
    if (line.msg === 'request') {
      const key = `${line.cache} ${line.status}`;
      requestLines[key] = (requestLines[key] ?? 0) + 1;
    } else if (line.msg === 'tunnel closed') {
      tunnelsClosed++;
      if (line.error !== undefined) tunnelsWithError++;
    }
    if ((line.level === 'error' || line.level === 'fatal') && errors.length < SAMPLES) errors.push(JSON.stringify(line));
    if (line.level === 'warn' && warnings.length < SAMPLES) warnings.push(JSON.stringify(line));
  }
  const errorLines = (linesByLevel.error ?? 0) + (linesByLevel.fatal ?? 0);
  return {
    healthy: running && healthzOk && errorLines === 0,
    running,
    healthz,
    linesByLevel,
    problemLines: [...errors, ...warnings].slice(0, SAMPLES),
    requestLines,
    tunnelsClosed,
    tunnelsWithError,
  };
}
