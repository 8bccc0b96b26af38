// How many of regcache's source files one request runs code in (issue 21's measure of indirection): regcache
// in this process over an in-process registry-shaped upstream, V8 precise coverage over the inspector;
// the counters are reset, one request is sent and answered, and the src/ files with a function that ran
// are listed. Rows: a warm blob GET through the proxy (CONNECT + TLS), the same through the mirror, and a
// cold blob GET through the proxy. Run: node --import tsx bench/request-files.ts [--list]
import inspector from 'node:inspector/promises';
import path from 'node:path';
import { request } from 'undici';
import { loadConfig } from '../src/config/config.js';
import { createLogger } from '../src/telemetry/log.js';
import { startProxy } from '../src/assembly/proxy.js';
import { createTestCA } from '../test/harness/pki.js';
import { freePort } from '../test/harness/ports.js';
import { TmpDirs } from '../test/harness/tmp.js';
import { FakeRegistry, makeBlob } from '../test/support/fake-registry.js';
import { ProxyClient } from '../test/support/proxy-client.js';

const SRC = path.resolve(import.meta.dirname, '../src') + path.sep;

async function main(): Promise<void> {
  const list = process.argv.includes('--list');
  const tmp = new TmpDirs();
  const dir = await tmp.make('regcache-request-files');
  const ca = await createTestCA(dir, 'request-files CA');
  const upstream = new FakeRegistry();
  await upstream.start(await ca.issue(['registry.test', '127.0.0.1'], dir, 'upstream'));
  const blobs = [makeBlob(1 << 20, 'warm'), makeBlob(1 << 20, 'cold')].map((b) => upstream.add(b));
  const mirrorPort = await freePort();
  const env = {
    PORT: '0',
    MIRROR_PORT: String(mirrorPort),
    WORKERS: '1',
    CA_DIR: path.join(dir, 'ca'),
    CACHE_DIR: path.join(dir, 'cache'),
    ADDITIONAL_REGISTRIES: 'registry.test',
    UPSTREAM_CA_FILE: ca.certFile,
    CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}`,
  };
  const proxy = await startProxy(loadConfig(env), createLogger('silent', false));
  const client = new ProxyClient(`http://127.0.0.1:${proxy.port}`, path.join(env.CA_DIR, 'ca.crt'));
  const viaProxy = (digest: string) => client.fetch(`https://registry.test/v2/lib/img/blobs/${digest}`);
  const viaMirror = async (digest: string) => {
    const res = await request(`http://127.0.0.1:${mirrorPort}/v2/lib/img/blobs/${digest}?ns=registry.test`);
    await res.body.dump();
    return { status: res.statusCode };
  };

  const session = new inspector.Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: false });
  const measure = async (name: string, send: () => Promise<{ status: number }>): Promise<void> => {
    await session.post('Profiler.takePreciseCoverage'); // resets the counters
    const { status } = await send();
    await new Promise((resolve) => setImmediate(resolve)); // the response's close (the log line) runs too
    const { result } = await session.post('Profiler.takePreciseCoverage');
    const files = result
      .filter((script) => script.url.startsWith('file://') && new URL(script.url).pathname.startsWith(SRC))
      .filter((script) => script.functions.some((f) => f.ranges.some((r) => r.count > 0)))
      .map((script) => path.relative(SRC, new URL(script.url).pathname))
      .sort();
    console.log(`${name.padEnd(34)} status ${status}  ${String(files.length).padStart(3)} files`);
    if (list) for (const file of files) console.log(`    ${file}`);
  };

  const [warm, cold] = blobs as [ReturnType<typeof makeBlob>, ReturnType<typeof makeBlob>];
  await viaProxy(warm.digest); // stores it; the warm rows read it back
  await viaProxy(warm.digest);
  await viaMirror(warm.digest);
  await measure('warm blob GET through the proxy', () => viaProxy(warm.digest));
  await measure('warm blob GET through the mirror', () => viaMirror(warm.digest));
  await measure('cold blob GET through the proxy', () => viaProxy(cold.digest));

  session.disconnect();
  await client.close();
  await proxy.close(0);
  await upstream.close();
  await tmp.cleanup();
}

await main();
