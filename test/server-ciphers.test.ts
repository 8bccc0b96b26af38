// tier: unit
// The cipher regcache's own TLS servers choose (src/tls/server-ciphers.ts), in process: a client that lists
// AES-256-GCM first, as Node's and OpenSSL's do (and as regcache chose for Go clients before), gets TLS 1.3's
// AES-128-GCM from an intercepted host and from the mirror (with SNI and without); a client that offers
// only AES-256-GCM still gets it.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { freePort } from './harness/ports.js';
import { TmpDirs } from './harness/tmp.js';
import { startInProcessRegcache, type InProcessRegcache } from './support/in-process-regcache.js';

const AES_256_FIRST = 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256';

/** The TLS 1.3 suite a handshake over `socket` (or to `port`) settles on; the connection is then closed. */
async function negotiated(options: tls.ConnectionOptions): Promise<string> {
  const socket = tls.connect({ ...options, ciphers: options.ciphers ?? AES_256_FIRST, minVersion: 'TLSv1.3' });
  try {
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    return socket.getCipher().standardName;
  } finally {
    socket.destroy();
  }
}

/** A CONNECT tunnel through the proxy to host:443, answered 200. */
async function tunnel(proxyPort: number, host: string): Promise<net.Socket> {
  const socket = net.connect(proxyPort, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(`CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`);
  const head = await new Promise<string>((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (!text.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      resolve(text);
    };
    socket.on('data', onData).once('error', reject);
  });
  assert.match(head, /^HTTP\/1\.1 200/);
  return socket;
}

describe("regcache's TLS servers prefer AES-128-GCM", () => {
  const tmp = new TmpDirs();
  let proxy: InProcessRegcache;
  let ca: string;

  before(async () => {
    proxy = await startInProcessRegcache({
      dir: await tmp.make('regcache-server-ciphers'),
      env: { MIRROR_HOSTNAME: 'mirror.test', MIRROR_PORT: String(await freePort()) },
    });
    ca = await readFile(proxy.caFile, 'utf8');
  });
  after(async () => {
    await proxy?.stop();
    await tmp.cleanup();
  });

  it('on an intercepted host', async () => {
    const socket = await tunnel(proxy.port, 'registry-1.docker.io');
    assert.equal(await negotiated({ socket, servername: 'registry-1.docker.io', ca }), 'TLS_AES_128_GCM_SHA256');
  });

  it('on the mirror, with SNI and without', async () => {
    assert.equal(await negotiated({ port: proxy.mirrorPort!, host: '127.0.0.1', servername: 'mirror.test', ca }), 'TLS_AES_128_GCM_SHA256');
    assert.equal(await negotiated({ port: proxy.mirrorPort!, host: '127.0.0.1', ca, checkServerIdentity: () => undefined }), 'TLS_AES_128_GCM_SHA256');
  });

  it('still gives AES-256-GCM to a client that offers nothing else', async () => {
    const socket = await tunnel(proxy.port, 'registry-1.docker.io');
    assert.equal(await negotiated({ socket, servername: 'registry-1.docker.io', ca, ciphers: 'TLS_AES_256_GCM_SHA384' }), 'TLS_AES_256_GCM_SHA384');
  });
});
