// tier: e2e
// The CA in CA_DIR and the leaves minted from it, checked by real TLS handshakes against the CA.
import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { copyFile, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import forge from 'node-forge';
import { CaError, loadOrCreateCa, type CertificateAuthority } from '../src/tls/certificate-authority.js';
import { LeafCertificates } from '../src/tls/leaf-certificates.js';
import { LEAF_KEY_FILE, loadOrCreateLeafKey } from '../src/tls/leaf-key.js';
import { run, sleep } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';
import { makeRpardiniCa } from './support/rpardini-ca.js';

const ROOT = path.resolve(import.meta.dirname, '..');

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

  // A fleet's replicas sharing one CA_DIR volume (deploy/compose) start at once on it while it is empty.
  it('gives replicas that start at once on one empty CA_DIR one and the same CA', async () => {
    const dir = path.join(await tmp.make('regcache-ca-race'), 'ca');
    const module = pathToFileURL(path.join(ROOT, 'dist', 'tls', 'certificate-authority.js')).href;
    const script = `const { loadOrCreateCa } = await import(${JSON.stringify(module)}); const { ca, created } = await loadOrCreateCa(process.argv[1]); console.log(JSON.stringify({ created, cert: ca.certPem, key: ca.key.export({ type: 'pkcs8', format: 'pem' }) }));`;
    for (let round = 0; round < 3; round++) {
      await rm(dir, { recursive: true, force: true });
      const replicas = await Promise.all(
        Array.from({ length: 4 }, () => run(process.execPath, ['--input-type=module', '-e', script, dir], { env: { PATH: process.env.PATH ?? '' } })),
      );
      for (const r of replicas) assert.equal(r.code, 0, r.stderr);
      const loaded = replicas.map((r) => JSON.parse(r.stdout) as { created: boolean; cert: string; key: string });
      assert.equal(loaded.filter((l) => l.created).length, 1, 'exactly one replica created the CA');
      assert.equal(new Set(loaded.map((l) => l.cert)).size, 1, 'every replica presents the same CA certificate');
      assert.equal(new Set(loaded.map((l) => l.key)).size, 1, 'and signs with the same key');
      assert.equal(await readFile(path.join(dir, 'ca.crt'), 'utf8'), loaded[0]!.cert, 'the one on disk');
      assert.equal((await loadOrCreateCa(dir)).created, false, 'the pair on disk loads (the key belongs to the certificate)');
      assert.deepEqual((await readdir(dir)).sort(), ['ca.crt', 'ca.key'], 'no temp files left');
    }
  });

  it('waits for the certificate of a key another replica has just put in place', async () => {
    const dir = await tmp.make('regcache-ca-half');
    const made = await tmp.make('regcache-ca-made');
    await loadOrCreateCa(made);
    await copyFile(path.join(made, 'ca.key'), path.join(dir, 'ca.key'));
    const loading = loadOrCreateCa(dir);
    await sleep(300);
    await copyFile(path.join(made, 'ca.crt'), path.join(dir, 'ca.crt'));
    const { ca, created } = await loading;
    assert.equal(created, false);
    assert.equal(ca.certPem, await readFile(path.join(made, 'ca.crt'), 'utf8'));
    // A key left alone long ago (a crash between the two renames) is reported at once.
    await rm(path.join(dir, 'ca.crt'));
    const old = new Date(Date.now() - 3_600_000);
    await utimes(path.join(dir, 'ca.key'), old, old);
    const started = Date.now();
    await assert.rejects(loadOrCreateCa(dir), /ca\.crt is missing/);
    assert.ok(Date.now() - started < 1_000, 'not waited for');
  });
});

/** The DER bytes of a certificate's issuer and subject names, as they are in the file. */
function rawNames(pem: string): { issuer: string; subject: string } {
  const tbs = forge.asn1.fromDer(forge.pem.decode(pem)[0]!.body).value[0] as forge.asn1.Asn1;
  const fields = tbs.value as forge.asn1.Asn1[]; // [0] version, serial, signature algorithm, issuer, validity, subject, ...
  return { issuer: forge.asn1.toDer(fields[3]!).toHex(), subject: forge.asn1.toDer(fields[5]!).toHex() };
}

// rpardini/docker-registry-proxy's /ca: ca.key encrypted with its fixed passphrase. Moving to regcache must
// not mean re-trusting a CA on every client.
describe('a CA made by rpardini/docker-registry-proxy (create_ca_cert.sh)', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  for (const traditional of [false, true]) {
    it(`is reused as it is: ca.key (${traditional ? "openssl 1.1's DEK-Info PEM" : "openssl 3's encrypted PKCS#8"}) opened with rpardini's passphrase, left encrypted, leaves issued under its exact name`, async () => {
      const dir = await tmp.make('regcache-rpardini-ca');
      const made = await makeRpardiniCa(dir, { traditional });
      const keyBefore = await readFile(made.keyFile, 'utf8');
      assert.match(keyBefore, traditional ? /Proc-Type: 4,ENCRYPTED/ : /BEGIN ENCRYPTED PRIVATE KEY/);
      const { ca, created, keyPassphrase } = await loadOrCreateCa(dir);
      assert.equal(created, false);
      assert.equal(keyPassphrase, 'rpardini-default');
      assert.equal(ca.certPem, await readFile(made.certFile, 'utf8'));
      assert.equal(await readFile(made.keyFile, 'utf8'), keyBefore, 'ca.key is left as it was: encrypted');
      assert.deepEqual((await readdir(dir)).sort(), ['ca.crt', 'ca.key', 'ca.srl']);

      const leaves = LeafCertificates.create(ca, (await loadOrCreateLeafKey(dir, null)).key, 2);
      const leaf = leaves.pemFor('registry-1.docker.io').cert;
      assert.ok(new X509Certificate(leaf).checkIssued(new X509Certificate(ca.certPem)));
      // Go clients match a certificate to its issuer by these bytes: openssl wrote UTF8Strings.
      assert.equal(rawNames(leaf).issuer, rawNames(ca.certPem).subject);
    });
  }

  it('opens a key with another passphrase with CA_KEY_PASSPHRASE, and says what to do when none opens it', async () => {
    const dir = await tmp.make('regcache-ca-passphrase');
    await makeRpardiniCa(dir, { passphrase: 's3cret pass' });
    await assert.rejects(loadOrCreateCa(dir), (err: Error) => {
      assert.ok(err instanceof CaError);
      assert.match(
        err.message,
        /ca\.key is encrypted, CA_KEY_PASSPHRASE is unset and rpardini's default passphrase does not open it \((bad decrypt|unsupported)\): set CA_KEY_PASSPHRASE/,
      );
      assert.doesNotMatch(err.message, /interrupted|cancelled/);
      return true;
    });
    await assert.rejects(
      loadOrCreateCa(dir, 'wrong'),
      /ca\.key is encrypted, CA_KEY_PASSPHRASE does not open it \((bad decrypt|unsupported)\): set CA_KEY_PASSPHRASE to the passphrase/,
    );
    const { keyPassphrase } = await loadOrCreateCa(dir, 's3cret pass');
    assert.equal(keyPassphrase, 'CA_KEY_PASSPHRASE');
  });

  it('writes a new CA key encrypted with CA_KEY_PASSPHRASE when it is set', async () => {
    const dir = path.join(await tmp.make('regcache-ca-new-encrypted'), 'ca');
    const first = await loadOrCreateCa(dir, 'pw');
    assert.equal(first.created, true);
    assert.match(await readFile(path.join(dir, 'ca.key'), 'utf8'), /BEGIN ENCRYPTED PRIVATE KEY/);
    assert.equal((await loadOrCreateCa(dir, 'pw')).ca.certPem, first.ca.certPem);
    await assert.rejects(loadOrCreateCa(dir), /CA_KEY_PASSPHRASE is unset/);
  });
});

describe('leaf certificates', () => {
  const tmp = new TmpDirs();
  let ca: CertificateAuthority;
  let leaves: LeafCertificates;
  let server: tls.Server;
  let port: number;

  before(async () => {
    const dir = await tmp.make('regcache-leaves');
    ca = (await loadOrCreateCa(dir)).ca;
    leaves = LeafCertificates.create(ca, (await loadOrCreateLeafKey(dir, null)).key, 2);
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

describe('the leaf key (CA_DIR/leaf.key)', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('is created once, 0600, and loaded by every later start', async () => {
    const dir = await tmp.make('regcache-leaf-key');
    const first = await loadOrCreateLeafKey(dir, null);
    assert.equal(first.source, 'created');
    assert.equal(first.problem, undefined);
    assert.equal((await stat(path.join(dir, LEAF_KEY_FILE))).mode & 0o777, 0o600);
    const again = await loadOrCreateLeafKey(dir, null);
    assert.equal(again.source, 'loaded');
    assert.equal(again.key.publicKeyPem, first.key.publicKeyPem);
    assert.equal(again.key.keyPem, first.key.keyPem);
  });

  it('gives processes that start at once on an empty CA_DIR one and the same key', async () => {
    const dir = await tmp.make('regcache-leaf-key-race');
    const all = await Promise.all([1, 2, 3, 4].map(() => loadOrCreateLeafKey(dir, null)));
    assert.equal(new Set(all.map((k) => k.key.publicKeyPem)).size, 1, 'one key for all');
    assert.equal(all.filter((k) => k.source === 'created').length, 1);
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.startsWith(LEAF_KEY_FILE)),
      [LEAF_KEY_FILE],
      'no temp file left',
    );
  });

  it('is written encrypted with CA_KEY_PASSPHRASE when it is set', async () => {
    const dir = await tmp.make('regcache-leaf-key-encrypted');
    const first = await loadOrCreateLeafKey(dir, 'pw');
    assert.match(await readFile(path.join(dir, LEAF_KEY_FILE), 'utf8'), /BEGIN ENCRYPTED PRIVATE KEY/);
    assert.equal((await loadOrCreateLeafKey(dir, 'pw')).key.publicKeyPem, first.key.publicKeyPem);
    const wrong = await loadOrCreateLeafKey(dir, 'other');
    assert.equal(wrong.source, 'created', 'a key the passphrase does not open is replaced');
    assert.match(wrong.problem ?? '', /leaf\.key was not usable \(.*\): replaced with a new key/);
  });

  it('replaces a file that is no usable key, and serves from memory when CA_DIR cannot be written', async () => {
    const dir = await tmp.make('regcache-leaf-key-bad');
    const file = path.join(dir, LEAF_KEY_FILE);
    await writeFile(file, 'not a key\n');
    const replaced = await loadOrCreateLeafKey(dir, null);
    assert.equal(replaced.source, 'created');
    assert.match(replaced.problem ?? '', /was not usable/);
    assert.equal((await loadOrCreateLeafKey(dir, null)).key.publicKeyPem, replaced.key.publicKeyPem);
    // An EC key is a key, but not one the leaves can carry.
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(file, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    assert.match((await loadOrCreateLeafKey(dir, null)).problem ?? '', /not an RSA key of 2048 bits or more/);

    // /sys refuses new files even to root: a stand-in for a read-only Secret volume.
    const readOnly = await loadOrCreateLeafKey('/sys', null);
    assert.equal(readOnly.source, 'memory');
    assert.match(readOnly.problem ?? '', /cannot write \/sys\/leaf\.key: .*EACCES/);
    const ca = (await loadOrCreateCa(await tmp.make('regcache-leaf-key-ca'))).ca;
    const leaf = LeafCertificates.create(ca, readOnly.key, 2).pemFor('example.test').cert;
    assert.equal(new X509Certificate(leaf).publicKey.export({ type: 'spki', format: 'pem' }).toString(), readOnly.key.publicKeyPem);
  });
});
