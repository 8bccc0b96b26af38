// The CA in CA_DIR and the leaves minted from it, checked by real TLS handshakes against the CA.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { rm, stat, writeFile, readFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { CaError, loadOrCreateCa, type CertificateAuthority } from '../src/tls/certificate-authority.js';
import { LeafCertificates } from '../src/tls/leaf-certificates.js';
import { TmpDirs } from './harness/tmp.js';

describe('certificate authority', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('creates ca.crt and a 0600 ca.key once, then reuses them', async () => {
    const dir = path.join(await tmp.make('regcache-ca'), 'certs');
    const first = await loadOrCreateCa(dir);
    assert.equal(first.created, true);
    assert.equal((await stat(path.join(dir, 'ca.key'))).mode & 0o777, 0o600);
    const cert = new X509Certificate(await readFile(path.join(dir, 'ca.crt')));
    assert.ok(cert.ca);
    const second = await loadOrCreateCa(dir);
    assert.equal(second.created, false);
    assert.equal(second.ca.certPem, first.ca.certPem);
  });

  it('refuses half a CA and a key that does not belong to the certificate', async () => {
    const dir = await tmp.make('regcache-ca-broken');
    await loadOrCreateCa(path.join(dir, 'a'));
    await loadOrCreateCa(path.join(dir, 'b'));
    await writeFile(path.join(dir, 'a', 'ca.key'), await readFile(path.join(dir, 'b', 'ca.key')));
    await assert.rejects(loadOrCreateCa(path.join(dir, 'a')), CaError);
    await rm(path.join(dir, 'b', 'ca.key'));
    await assert.rejects(loadOrCreateCa(path.join(dir, 'b')), /missing/);
  });
});

describe('leaf certificates', () => {
  const tmp = new TmpDirs();
  let ca: CertificateAuthority;
  let leaves: LeafCertificates;
  let server: tls.Server;
  let port: number;

  before(async () => {
    ca = (await loadOrCreateCa(await tmp.make('regcache-leaves'))).ca;
    leaves = await LeafCertificates.create(ca, 2);
    server = tls.createServer({ SNICallback: (name, cb) => cb(null, leaves.contextFor(name)) }, (s) => s.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.close();
    await tmp.cleanup();
  });

  const handshake = (servername: string, checkServerIdentity?: typeof tls.checkServerIdentity) =>
    new Promise<X509Certificate>((resolve, reject) => {
      const s = tls.connect({ port, host: '127.0.0.1', servername, ca: ca.certPem, ...(checkServerIdentity ? { checkServerIdentity } : {}) }, () => {
        resolve(s.getPeerX509Certificate()!);
        s.destroy();
      });
      s.once('error', reject);
    });

  it('mints a leaf a strict client accepts for the host, valid at most 397 days', async () => {
    const cert = await handshake('registry-1.docker.io');
    assert.match(cert.subjectAltName ?? '', /DNS:registry-1\.docker\.io/);
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    assert.ok(days <= 398 && days > 390, `validity ${days} days`);
    assert.ok(cert.checkIssued(new X509Certificate(ca.certPem)));
  });

  it('puts an IP SAN in leaves for IP hosts', async () => {
    // SNI cannot carry an IP: like the interceptor, pick the context from the CONNECT target instead.
    const ipServer = net.createServer((raw) => {
      const s = new tls.TLSSocket(raw, { isServer: true, secureContext: leaves.contextFor('10.1.2.3') });
      s.once('secure', () => s.end());
      s.once('error', () => raw.destroy());
    });
    await new Promise<void>((resolve) => ipServer.listen(0, '127.0.0.1', resolve));
    const cert = await new Promise<X509Certificate>((resolve, reject) => {
      const s = tls.connect({ port: (ipServer.address() as AddressInfo).port, host: '127.0.0.1', ca: ca.certPem, checkServerIdentity: () => undefined }, () => {
        resolve(s.getPeerX509Certificate()!);
        s.destroy();
      });
      s.once('error', reject);
    });
    ipServer.close();
    assert.match(cert.subjectAltName ?? '', /IP Address:10\.1\.2\.3/);
  });

  it('reuses cached leaves and evicts the least recently used past the bound', async () => {
    const before = leaves.minted;
    await handshake('a.test');
    await handshake('a.test');
    assert.equal(leaves.minted, before + 1);
    await handshake('b.test');
    await handshake('c.test'); // bound 2: evicts a.test
    await handshake('a.test');
    assert.equal(leaves.minted, before + 4);
  });
});
