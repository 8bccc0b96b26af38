// How many of regcache's source files one request runs code in (issue 21's measure of indirection): regcache
// in this process over an in-process registry-shaped upstream, V8 precise coverage over the inspector;
// the counters are reset, one request is sent and answered, and the src/ files with a function that ran
// are listed. Rows, for each store: a warm blob GET through the proxy (CONNECT + TLS), the same through
// the mirror, and a cold blob GET through the proxy. Stores: one process on a directory (WORKERS=1); a
// worker over its primary's directory (WORKERS > 1, the default on a machine with several cores: the
// worker and the primary run in this one process, over an in-process channel, so both sides count); and
// with --s3, a replica on a real S3 bucket (Ceph RGW, test/harness/s3-server.ts).
// Run: node --import tsx bench/request-files.ts [--list] [--s3]
import inspector from 'node:inspector/promises';
import path from 'node:path';
import { request } from 'undici';
import { loadConfig, type Config } from '../src/config/config.js';
import { createLogger, type Logger } from '../src/telemetry/log.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { openDoors, openLeafCertificates, serveProxy, startProxy, type RunningProxy } from '../src/assembly/proxy.js';
import { ownListeners } from '../src/assembly/listeners.js';
import { ownDirectory, primaryStore } from '../src/assembly/store-owner.js';
import { prepareStartup } from '../src/assembly/startup.js';
import { StoreHost } from '../src/cache/workers/store-host.js';
import { createTestCA } from '../test/harness/pki.js';
import { freePort } from '../test/harness/ports.js';
import { startS3Server } from '../test/harness/s3-server.js';
import { TmpDirs } from '../test/harness/tmp.js';
import { channelPair } from '../test/support/channel-pair.js';
import { FakeRegistry, makeBlob } from '../test/support/fake-registry.js';
import { ProxyClient } from '../test/support/proxy-client.js';

const SRC = path.resolve(import.meta.dirname, '../src') + path.sep;

type Store = 'directory' | 'worker' | 's3';

async function main(): Promise<void> {
  const functions = process.argv.includes('--functions'); // each file's functions that ran, too
  const list = functions || process.argv.includes('--list');
  const stores: Store[] = ['directory', 'worker', ...(process.argv.includes('--s3') ? (['s3'] as const) : [])];
  const tmp = new TmpDirs();
  const dir = await tmp.make('regcache-request-files');
  const ca = await createTestCA(dir, 'request-files CA');
  const upstream = new FakeRegistry();
  await upstream.start(await ca.issue(['registry.test', '127.0.0.1'], dir, 'upstream'));
  const s3 = stores.includes('s3') ? await startS3Server() : null;

  const session = new inspector.Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: false });
  const events = new LogEvents();
  // `settled`: what the request leaves running and is waited for before the count (a cold GET's commit).
  const measure = async (name: string, send: () => Promise<{ status: number }>, settled: () => Promise<void> = () => Promise.resolve()): Promise<void> => {
    await session.post('Profiler.takePreciseCoverage'); // resets the counters
    const { status } = await send();
    await settled();
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve)); // the response's close (the log line) runs too
    const { result } = await session.post('Profiler.takePreciseCoverage');
    const ran = result
      .filter((script) => script.url.startsWith('file://') && new URL(script.url).pathname.startsWith(SRC))
      .map((script) => ({
        file: path.relative(SRC, new URL(script.url).pathname),
        names: script.functions.filter((f) => f.ranges.some((r) => r.count > 0)).map((f) => f.functionName || `(anonymous@${f.ranges[0]!.startOffset})`),
      }))
      .filter((script) => script.names.length > 0)
      .sort((a, b) => a.file.localeCompare(b.file));
    console.log(`${name.padEnd(48)} status ${status}  ${String(ran.length).padStart(3)} files`);
    if (list) for (const { file, names } of ran) console.log(`    ${file}${functions ? `: ${[...new Set(names)].join(', ')}` : ''}`);
  };

  try {
    for (const store of stores) {
      const where = path.join(dir, store);
      const blobs = [makeBlob(1 << 20, `warm-${store}`), makeBlob(1 << 20, `cold-${store}`)].map((b) => upstream.add(b));
      const mirrorPort = await freePort();
      const env: Record<string, string> = {
        PORT: '0',
        MIRROR_PORT: String(mirrorPort),
        WORKERS: store === 'worker' ? '2' : '1',
        CA_DIR: path.join(where, 'ca'),
        CACHE_DIR: path.join(where, 'cache'),
        ADDITIONAL_REGISTRIES: 'registry.test',
        UPSTREAM_CA_FILE: ca.certFile,
        CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}`,
        ...(s3 && store === 's3' ? { ...s3.env, CACHE_STORE: 's3://request-files/fleet' } : {}),
      };
      if (store === 's3') Object.assign(process.env, s3!.env); // the AWS SDK's credential chain reads them here
      const config = loadConfig(env);
      const log = createLogger('debug', false, undefined, events);
      const running = store === 'worker' ? await startWorkerOverPrimary(config, log) : { proxy: await startProxy(config, log), close: () => Promise.resolve() };
      const client = new ProxyClient(`http://127.0.0.1:${running.proxy.port}`, path.join(env.CA_DIR!, 'ca.crt'));
      // Each request is over once its line is written (its response closed) and what that resolved has run:
      // no tail of it lands in the next row.
      const answered = async <T>(send: () => Promise<T>): Promise<T> => {
        const line = events.next(['request']);
        const result = await send();
        await line;
        await new Promise((resolve) => setImmediate(resolve));
        return result;
      };
      const viaProxy = (digest: string) => answered(() => client.fetch(`https://registry.test/v2/lib/img/blobs/${digest}`));
      const viaMirror = (digest: string) =>
        answered(async () => {
          const res = await request(`http://127.0.0.1:${mirrorPort}/v2/lib/img/blobs/${digest}?ns=registry.test`);
          await res.body.arrayBuffer(); // the whole body: dump() stops reading after 128 KiB and closes the connection
          return { status: res.statusCode };
        });
      const [warm, cold] = blobs as [ReturnType<typeof makeBlob>, ReturnType<typeof makeBlob>];
      // Stores it (the warm rows read it back: its commit and the access learned after it are waited for,
      // or a warm row would join the fill still syncing, or count the access check).
      const stored = events.next(['fill committed', 'content access learned']);
      await viaProxy(warm.digest);
      await stored;
      await viaProxy(warm.digest);
      await viaMirror(warm.digest);
      await measure(`${store}: warm blob GET through the proxy`, () => viaProxy(warm.digest));
      await measure(`${store}: warm blob GET through the mirror`, () => viaMirror(warm.digest));
      // A cold GET counts what it causes: the fill's commit after the response, and the access learned.
      const filled = events.next(['fill committed', 'content access learned']);
      await measure(
        `${store}: cold blob GET through the proxy`,
        () => viaProxy(cold.digest),
        () => filled,
      );
      await client.close();
      await running.proxy.close(0);
      await running.close();
    }
  } finally {
    session.disconnect();
    await upstream.close();
    await s3?.stop();
    await tmp.cleanup();
  }
}

/** The log's messages as they are written: what a request leaves running is waited for by its line. */
class LogEvents {
  private waiting: { messages: Set<string>; done: () => void }[] = [];

  write(record: string): void {
    for (const text of record.split('\n')) {
      if (!text.startsWith('{')) continue;
      const { msg } = JSON.parse(text) as { msg: string };
      for (const wait of this.waiting) wait.messages.delete(msg);
      this.waiting = this.waiting.filter((wait) => wait.messages.size > 0 || (wait.done(), false));
    }
  }

  /** Resolves once each of `messages` has been logged after this call. */
  next(messages: string[]): Promise<void> {
    return new Promise((done) => this.waiting.push({ messages: new Set(messages), done }));
  }
}

/**
 * A worker and its primary's store in this one process: the primary's side (the directory and the store
 * host) and the worker's (serveProxy over the worker backend) joined by an in-process channel, as
 * process/primary.ts and process/worker.ts join them over Node's IPC.
 */
async function startWorkerOverPrimary(config: Config, log: Logger): Promise<{ proxy: RunningProxy; close: () => Promise<void> }> {
  const owner = await ownDirectory(config, log, new Metrics());
  const host = new StoreHost(owner, log);
  const [primaryEnd, workerEnd, cut] = channelPair();
  host.attach(1, primaryEnd);
  const metrics = new Metrics();
  const { guard, doors, warnings } = openDoors(config, log, metrics);
  const ca = await prepareStartup(config, log, warnings);
  const [leaves, backend] = await Promise.all([openLeafCertificates(config, ca, log), primaryStore(config, workerEnd, 1)]);
  const unused = () => Promise.reject(new Error('not measured'));
  const proxy = await serveProxy(config, log, {
    metrics,
    guard,
    doors,
    ca,
    leaves,
    backend,
    listeners: ownListeners(config, log), // a real worker is handed its connections (one file more: process/connection-handoff.ts)
    storeGauges: false,
    views: { health: unused, listing: unused, metrics: { contentType: 'text/plain', metrics: unused }, status: unused },
  });
  return {
    proxy,
    close: async () => {
      cut();
      await host.detach(1);
      await owner.close();
    },
  };
}

await main();
