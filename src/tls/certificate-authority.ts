// The CA that signs leaf certificates for intercepted hosts: created once in CA_DIR, reused afterwards.
// The key is written 0600 and atomically, so a crash never leaves half a CA behind. Replicas sharing one
// CA_DIR (a fleet on one volume) may start at once on it while it is empty: each makes a CA, but only one
// key can be linked into place, and the others load the winner's pair. A key encrypted with a passphrase
// (rpardini/docker-registry-proxy's CA is) is read with CA_KEY_PASSPHRASE and left encrypted on disk.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { signCertificate, subjectOf, type SubjectAttr } from './x509-signer.js';
import { generateRsa, linkKey, writeTemp } from './key-files.js';
import { errorMessage, errorCode } from '../telemetry/error-message.js';

export interface CertificateAuthority {
  certPem: string;
  key: crypto.KeyObject;
  subject: SubjectAttr[];
  notAfter: Date;
  certFile: string;
}

const CA_VALIDITY_YEARS = 10;

export class CaError extends Error {
  override name = 'CaError';
}

// rpardini's create_ca_cert.sh encrypts ca.key with this fixed passphrase (openssl genrsa -des3 -passout
// pass:foobar): it is published, so it protects nothing, but a volume of theirs holds a key locked with it.
export const RPARDINI_CA_PASSPHRASE = 'foobar';

/** How an encrypted ca.key was opened: with CA_KEY_PASSPHRASE, or with rpardini's default (it was unset). */
export type KeyPassphraseSource = 'CA_KEY_PASSPHRASE' | 'rpardini-default';

export interface LoadedCa {
  ca: CertificateAuthority;
  created: boolean;
  keyPassphrase: KeyPassphraseSource | null; // null: ca.key is not encrypted
}

/**
 * Loads the CA from dir, or creates it when neither file exists. Half a CA or a mismatched pair is an error.
 * `passphrase` (CA_KEY_PASSPHRASE) opens an encrypted ca.key and encrypts a new one; null: rpardini's default.
 */
export async function loadOrCreateCa(dir: string, passphrase: string | null = null): Promise<LoadedCa> {
  const certFile = path.join(dir, 'ca.crt');
  const keyFile = path.join(dir, 'ca.key');
  let [certPem, keyPem] = await readPair(certFile, keyFile);
  if (certPem === null && keyPem === null) {
    let ca: CertificateAuthority | null;
    try {
      ca = await createCa(dir, certFile, keyFile, passphrase);
    } catch (err) {
      // e.g. CA_DIR on a read-only volume or behind a dangling link: say it was the CA that failed.
      throw new CaError(`cannot create a CA in ${dir}: ${errorMessage(err)}`);
    }
    if (ca) return { ca, created: true, keyPassphrase: passphrase === null ? null : 'CA_KEY_PASSPHRASE' };
    [certPem, keyPem] = await readPair(certFile, keyFile); // another process's key is in place: load its pair
  }
  if (certPem === null && keyPem !== null) [certPem, keyPem] = await awaitCertificate(certFile, keyFile, [certPem, keyPem]);
  if (certPem === null || keyPem === null) {
    throw new CaError(`${certPem === null ? certFile : keyFile} is missing while its pair exists; restore it or remove both to create a new CA`);
  }
  const { key, source } = readKey(keyPem, keyFile, passphrase);
  return { ca: parseCa(certPem, key, certFile, keyFile), created: false, keyPassphrase: source };
}

/**
 * The CA certificate clients must trust, as `regcache ca path|export` show it: never creates a CA (only
 * the server does), and needs no access to the key. CaError naming the file when there is none.
 */
export async function readCaCertificate(dir: string): Promise<{ certFile: string; certPem: string }> {
  const certFile = path.join(dir, 'ca.crt');
  const certPem = await readIfExists(certFile);
  if (certPem === null) {
    throw new CaError(
      `there is no CA certificate at ${certFile} (CA_DIR=${dir}, or --ca-dir): regcache serve creates ca.crt and ca.key there when it first starts; or point CA_DIR at the directory that holds them`,
    );
  }
  parseCaCertificate(certPem, certFile);
  return { certFile, certPem };
}

function parseCaCertificate(certPem: string, certFile: string): crypto.X509Certificate {
  let x509: crypto.X509Certificate;
  try {
    x509 = new crypto.X509Certificate(certPem);
  } catch (err) {
    throw new CaError(`${certFile} is not a PEM certificate: ${errorMessage(err)}`);
  }
  if (!x509.ca) throw new CaError(`${certFile} is not a CA certificate (basicConstraints CA:FALSE)`);
  return x509;
}

/** ca.crt and ca.key, null for either that does not exist. */
async function readPair(certFile: string, keyFile: string): Promise<[string | null, string | null]> {
  // Both read at once, but a failure is reported for the certificate first, whichever failed first.
  const [cert, key] = await Promise.allSettled([readIfExists(certFile), readIfExists(keyFile)]);
  if (cert.status === 'rejected') throw cert.reason;
  if (key.status === 'rejected') throw key.reason;
  return [cert.value, key.value];
}

// A key put in place this recently may be another process's CA between its key and its certificate
// (createCa): its certificate is waited for, up to CERT_WAIT_MS. An older lone key is a crash's leftover.
const FRESH_KEY_MS = 60_000;
const CERT_WAIT_MS = 5_000;
const CERT_POLL_MS = 50;

async function awaitCertificate(certFile: string, keyFile: string, pair: [string | null, string | null]): Promise<[string | null, string | null]> {
  const modified = await fs.stat(keyFile).then(
    (s) => s.mtimeMs,
    () => 0,
  );
  if (Date.now() - modified > FRESH_KEY_MS) return pair;
  const deadline = Date.now() + CERT_WAIT_MS;
  while (pair[0] === null && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, CERT_POLL_MS));
    pair = await readPair(certFile, keyFile);
  }
  return pair;
}

async function readIfExists(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return null;
    throw new CaError(`cannot read ${file}: ${errorMessage(err)}`);
  }
}

// What to do about a ca.key that cannot be used, said after why.
const KEY_REMEDY = 'restore the ca.key that belongs to ca.crt, or move both files aside to have a new CA created (clients must then trust it)';

/** The private key in ca.key, decrypted when it is encrypted; CaError saying why and what to do otherwise. */
function readKey(keyPem: string, keyFile: string, passphrase: string | null): { key: crypto.KeyObject; source: KeyPassphraseSource | null } {
  // PKCS#8 (openssl 3's genrsa -des3) or the traditional PEM with a DEK-Info header (openssl 1.1's).
  const encrypted = /-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: *4, *ENCRYPTED/m.test(keyPem);
  if (!encrypted) {
    try {
      return { key: crypto.createPrivateKey(keyPem), source: null };
    } catch (err) {
      throw new CaError(`${keyFile} is not a PEM private key (${openSslReason(err)}): ${KEY_REMEDY}`);
    }
  }
  const source: KeyPassphraseSource = passphrase === null ? 'rpardini-default' : 'CA_KEY_PASSPHRASE';
  try {
    return { key: crypto.createPrivateKey({ key: keyPem, format: 'pem', passphrase: passphrase ?? RPARDINI_CA_PASSPHRASE }), source };
  } catch (err) {
    // A wrong passphrase mostly fails the padding check ("bad decrypt"); now and then it decrypts to bytes
    // that are no key, which OpenSSL calls "unsupported", as it does a cipher it cannot read.
    const code = errorCode(err) ?? '';
    const cipherNote = /UNSUPPORTED/.test(code)
      ? ' (if it is right, ca.key uses a cipher this Node.js cannot read: re-encrypt it, e.g. openssl pkcs8 -topk8 -v2 aes-256-cbc -in ca.key -out ca.key.new)'
      : '';
    const which = passphrase === null ? "CA_KEY_PASSPHRASE is unset and rpardini's default passphrase" : 'CA_KEY_PASSPHRASE';
    throw new CaError(
      `${keyFile} is encrypted, ${which} does not open it (${openSslReason(err)}): set CA_KEY_PASSPHRASE to the passphrase ca.key was encrypted with${cipherNote}, or ${KEY_REMEDY}`,
    );
  }
}

/** OpenSSL's own words without its error-code prefix ("error:1C800064:Provider routines::bad decrypt"). */
function openSslReason(err: unknown): string {
  // Its message alone: errorMessage would append the ERR_OSSL_ code, which says the reason again.
  const message = err instanceof Error ? err.message : errorMessage(err);
  return message.replace(/^error:[0-9A-Fa-f]+:[^:]*:[^:]*:/, '');
}

function parseCa(certPem: string, key: crypto.KeyObject, certFile: string, keyFile: string): CertificateAuthority {
  const x509 = parseCaCertificate(certPem, certFile);
  if (key.asymmetricKeyType !== 'rsa') throw new CaError(`${keyFile} must be an RSA key (it is ${key.asymmetricKeyType}): ${KEY_REMEDY}`);
  if (!x509.checkPrivateKey(key)) throw new CaError(`${keyFile} does not belong to ${certFile}: ${KEY_REMEDY}`);
  if (Date.parse(x509.validTo) <= Date.now()) {
    throw new CaError(`${certFile} expired on ${x509.validTo}; remove ca.crt and ca.key to create a new CA (clients must then trust the new one)`);
  }
  return { certPem, key, subject: subjectOf(certPem), notAfter: new Date(x509.validTo), certFile };
}

/** A new CA in dir; null when another process put its key in place first (load theirs). */
async function createCa(dir: string, certFile: string, keyFile: string, passphrase: string | null): Promise<CertificateAuthority | null> {
  // A CA_DIR we create is 0700 whatever the umask; one that existed keeps its mode (it may be a volume or
  // a directory shared with other files); the key itself is 0600 either way.
  if ((await fs.mkdir(dir, { recursive: true, mode: 0o700 })) !== undefined) await fs.chmod(dir, 0o700);
  const { publicKey, privateKey } = await generateRsa(2048);
  const now = new Date();
  const notAfter = new Date(now);
  notAfter.setFullYear(now.getFullYear() + CA_VALIDITY_YEARS);
  // A unique name per install: two regcache CAs on one client must not shadow each other.
  const subject: SubjectAttr[] = [
    { name: 'commonName', value: `regcache CA ${crypto.randomBytes(4).toString('hex')}` },
    { name: 'organizationName', value: 'regcache' },
  ];
  const certPem = signCertificate(
    {
      subject,
      issuer: subject,
      publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      notBefore: new Date(now.getTime() - 60 * 60 * 1000),
      notAfter,
      extensions: [
        { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
        { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
        { name: 'subjectKeyIdentifier' },
      ],
    },
    privateKey,
  );
  // Both files are written in full before either is put in place: a crash leaves temp files (ignored)
  // or, between the key and the certificate, the key alone, which the next start reports. The key goes
  // first and is linked, not renamed: a link fails when ca.key exists, so of processes creating a CA at
  // once exactly one wins and the pair on disk is always one CA's.
  // With CA_KEY_PASSPHRASE the new key is written encrypted with it, as a key regcache was given is kept.
  const keyPem = privateKey.export(
    passphrase === null ? { type: 'pkcs8', format: 'pem' } : { type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase },
  );
  const keyTemp = await writeTemp(keyFile, keyPem.toString(), 0o600);
  let certTemp: string;
  try {
    certTemp = await writeTemp(certFile, certPem, 0o644);
  } catch (err) {
    await fs.rm(keyTemp, { force: true });
    throw err;
  }
  try {
    if (!(await linkKey(keyTemp, keyFile))) {
      await fs.rm(certTemp, { force: true });
      return null;
    }
  } finally {
    await fs.rm(keyTemp, { force: true });
  }
  await fs.rename(certTemp, certFile);
  return { certPem, key: privateKey, subject, notAfter, certFile };
}
