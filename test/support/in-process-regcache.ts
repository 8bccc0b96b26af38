// regcache started in the test's own process (startProxy, as `regcache serve` with WORKERS=1 does), its log
// lines kept in memory: what test/harness/regcache.ts offers for a spawned one, without the build, the
// process start or a log file. For tests of what one process does; signals, exit codes, WORKERS > 1 and
// the CLI need the real process (harness/regcache.ts).
import path from 'node:path';
import { startProxy } from '../../src/assembly/proxy.js';
import { loadConfig } from '../../src/config/config.js';
import { createLogger } from '../../src/telemetry/log.js';
import { waitForLogLine, type LogLine, type RunningRegcache } from '../harness/regcache.js';
import { sleep } from '../harness/proc.js';
import { seedCaDir } from '../harness/ca-template.js';

/** The spawned one's interface (requests() reads once no line has come for a moment). */
export type InProcessRegcache = RunningRegcache;

export interface InProcessOptions {
  dir: string; // holds certs/ and cache/ unless caDir, cacheDir say otherwise
  env?: Record<string, string>;
  caDir?: string;
  cacheDir?: string;
}

export async function startInProcessRegcache(opts: InProcessOptions): Promise<InProcessRegcache> {
  const caDir = opts.caDir ?? path.join(opts.dir, 'certs');
  const cacheDir = opts.cacheDir ?? path.join(opts.dir, 'cache');
  // The same defaults as a spawned regcache in the tests (harness/regcache.ts).
  await seedCaDir(caDir);
  const config = loadConfig({ PORT: '0', MIRROR_PORT: '0', CA_DIR: caDir, CACHE_DIR: cacheDir, LOG_LEVEL: 'debug', WORKERS: '1', ...opts.env });
  const lines: LogLine[] = [];
  let written = 0; // lines so far, for a settled read
  const log = createLogger(config.logLevel, false, undefined, {
    write(record: string): void {
      for (const text of record.split('\n')) if (text.startsWith('{')) lines.push(JSON.parse(text) as LogLine);
      written++;
    },
  });
  const proxy = await startProxy(config, log);
  const mirrorPort = proxy.ports.mirror?.port ?? null;

  const logs = async (): Promise<LogLine[]> => [...lines];
  const waitForLog: InProcessRegcache['waitForLog'] = (predicate, what, options = {}) => waitForLogLine(logs, predicate, what, options, { intervalMs: 10 });
  return {
    port: proxy.port,
    mirrorPort,
    proxyUrl: `http://127.0.0.1:${proxy.port}`,
    caFile: path.join(caDir, 'ca.crt'),
    cacheDir,
    logs,
    // A request line is written when the server sees the response close, which can come just after the
    // client has its last byte: wait until no line has come for a moment before reading.
    requests: async (since = 0) => {
      for (let last = -1, i = 0; i < 40 && written !== last; i++) {
        last = written;
        await sleep(25);
      }
      return lines.slice(since).filter((l) => l.msg === 'request');
    },
    waitForLog,
    logMark: async () => lines.length,
    stop: () => proxy.close(0),
  };
}
