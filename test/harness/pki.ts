import { generateKeyPair, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import forge from 'node-forge';

const generateKeyPairAsync = promisify(generateKeyPair);

/** PEM material of an issued certificate, also written to disk. */
export interface IssuedCert {
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
}

export interface TestCA {
  certFile: string;
  keyFile: string;
  certPem: string;
  /** Server certificate (serverAuth) with DNS SANs, and IP SANs for IP strings. */
  issue(hostnames: string[], dir: string, basename: string): Promise<IssuedCert>;
}

/** Native RSA keys (fast), PEM-exported so forge can sign with them. */
async function newRsaKey(): Promise<{ keyPem: string; forgeKey: forge.pki.rsa.PrivateKey; forgePub: forge.pki.rsa.PublicKey }> {
  const { privateKey, publicKey } = await generateKeyPairAsync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return {
    keyPem: privateKey,
    forgeKey: forge.pki.privateKeyFromPem(privateKey),
    forgePub: forge.pki.publicKeyFromPem(publicKey) as forge.pki.rsa.PublicKey,
  };
}

/** Positive serial: Go rejects negative ones, so clear the DER sign bit. */
function newSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

/** Backdate notBefore so small clock differences between processes never matter. */
function setValidity(cert: forge.pki.Certificate, days: number): void {
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 60 * 60 * 1000);
  cert.validity.notAfter = new Date(now + days * 24 * 60 * 60 * 1000);
}

function altNames(hostnames: string[]): Array<{ type: number; value?: string; ip?: string }> {
  // type 2 = dNSName, type 7 = iPAddress (forge encodes the ip string itself).
  return hostnames.map((h) => (net.isIP(h) ? { type: 7, ip: h } : { type: 2, value: h }));
}

/**
 * Self-signed RSA certificate that is not a server cert, e.g. the key a token
 * server signs JWTs with. Kept here so all X.509 code lives in one place.
 */
export async function createSigningCert(dir: string, basename: string, commonName: string): Promise<IssuedCert> {
  const key = await newRsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = key.forgePub;
  cert.serialNumber = newSerial();
  setValidity(cert, 365);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([{ name: 'basicConstraints', cA: false }, { name: 'keyUsage', critical: true, digitalSignature: true }, { name: 'subjectKeyIdentifier' }]);
  cert.sign(key.forgeKey, forge.md.sha256.create());
  return writePair(dir, basename, forge.pki.certificateToPem(cert), key.keyPem);
}

async function writePair(dir: string, basename: string, certPem: string, keyPem: string): Promise<IssuedCert> {
  const certFile = path.join(dir, `${basename}.crt`);
  const keyFile = path.join(dir, `${basename}.key`);
  await mkdir(dir, { recursive: true });
  await writeFile(certFile, certPem);
  await writeFile(keyFile, keyPem, { mode: 0o600 });
  return { certFile, keyFile, certPem, keyPem };
}

/** Create a root CA and write ca.crt / ca.key into dir. */
export async function createTestCA(dir: string, name: string): Promise<TestCA> {
  const caKey = await newRsaKey();
  const caCert = forge.pki.createCertificate();
  caCert.publicKey = caKey.forgePub;
  caCert.serialNumber = newSerial();
  setValidity(caCert, 3650);
  const caSubject = [
    { name: 'commonName', value: name },
    { name: 'organizationName', value: 'regcache tests' },
  ];
  caCert.setSubject(caSubject);
  caCert.setIssuer(caSubject);
  caCert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true, digitalSignature: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  caCert.sign(caKey.forgeKey, forge.md.sha256.create());
  const ca = await writePair(dir, 'ca', forge.pki.certificateToPem(caCert), caKey.keyPem);

  async function issue(hostnames: string[], outDir: string, basename: string): Promise<IssuedCert> {
    if (hostnames.length === 0) throw new Error('issue: at least one hostname required');
    const key = await newRsaKey();
    const cert = forge.pki.createCertificate();
    cert.publicKey = key.forgePub;
    cert.serialNumber = newSerial();
    setValidity(cert, 365);
    cert.setSubject([{ name: 'commonName', value: hostnames[0] ?? 'localhost' }]);
    cert.setIssuer(caCert.subject.attributes);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: altNames(hostnames) },
      { name: 'subjectKeyIdentifier' },
      // Explicit bytes: forge's 'true' would hash the leaf's own key, not the CA's.
      { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    ]);
    cert.sign(caKey.forgeKey, forge.md.sha256.create());
    return writePair(outDir, basename, forge.pki.certificateToPem(cert), key.keyPem);
  }

  return { certFile: ca.certFile, keyFile: ca.keyFile, certPem: ca.certPem, issue };
}
