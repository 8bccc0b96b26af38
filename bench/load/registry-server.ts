// docker-registry servers the load bench compares regcache with, each a process of its own (so that its
// CPU can be read from /proc):
//   - plain HTTP over the storage of the harness's registry: the same blobs, served from its disk, for
//     the wrk rows (wrk and regcache's mirror port speak plain HTTP);
//   - TLS over that storage, for the rows where the bench's own client speaks TLS;
//   - a pull-through cache (`proxy: remoteurl`, plain HTTP) with storage of its own, in front of the
//     harness's registry.
// Kept apart from test/harness/registry.ts (TLS only, no proxy mode) and from any peer benchmark's set-up.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Agent, request } from 'undici';
import { freePort } from '../../test/harness/ports.js';
import { logTail, spawnDaemon, waitFor, type Daemon } from '../../test/harness/proc.js';

export interface RegistryServerOptions {
  dir: string; // config and logs
  storageDir: string;
  tls?: { certFile: string; keyFile: string; caFile: string };
  /** Pull-through mode: the upstream registry's URL, and the CA file its certificate chains to. */
  pullThrough?: { remoteUrl: string; caFile: string };
}

export interface RegistryServer {
  url: string; // http(s)://127.0.0.1:PORT
  daemon: Daemon;
  stop(): Promise<void>;
}

const q = (s: string): string => JSON.stringify(s); // YAML double-quoted scalars take JSON strings

export async function startRegistryServer(opts: RegistryServerOptions): Promise<RegistryServer> {
  await mkdir(opts.dir, { recursive: true });
  await mkdir(opts.storageDir, { recursive: true });
  const port = await freePort();
  // As the harness's registry: info level and the access log on, i.e. every request is logged, as
  // regcache logs every request too.
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  accesslog:',
    '    disabled: false',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(opts.storageDir)}`,
    '  delete:',
    '    enabled: true', // the proxy's scheduler deletes what expires
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${q(`127.0.0.1:${port}`)}`,
    `  secret: ${q(randomBytes(16).toString('hex'))}`,
    ...(opts.tls ? ['  tls:', `    certificate: ${q(opts.tls.certFile)}`, `    key: ${q(opts.tls.keyFile)}`] : []),
    'health:',
    '  storagedriver:',
    '    enabled: false',
  ];
  if (opts.pullThrough) lines.push('proxy:', `  remoteurl: ${q(opts.pullThrough.remoteUrl)}`);
  const configFile = path.join(opts.dir, 'config.yml');
  await writeFile(configFile, lines.join('\n') + '\n');
  const logFile = path.join(opts.dir, 'registry.log');
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  // Go reads its trust store from SSL_CERT_FILE: the upstream's test CA.
  if (opts.pullThrough) env.SSL_CERT_FILE = opts.pullThrough.caFile;
  const daemon = spawnDaemon('docker-registry', ['serve', configFile], { env, stdoutFile: path.join(opts.dir, 'access.log'), stderrFile: logFile });
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const dispatcher = new Agent({ connect: { ca: opts.tls ? await readFile(opts.tls.caFile, 'utf8') : undefined } });
  try {
    await waitFor(
      async () => {
        if (!daemon.isRunning()) throw new Error(`docker-registry exited early:\n${await logTail(logFile)}`);
        const res = await request(`${url}/v2/`, { dispatcher }).catch(() => null);
        await res?.body.dump();
        return res?.statusCode === 200;
      },
      { timeoutMs: 15_000, what: `docker-registry on ${url}` },
    );
  } catch (err) {
    await daemon.stop();
    throw err;
  } finally {
    await dispatcher.close();
  }
  return { url, daemon, stop: () => daemon.stop() };
}
