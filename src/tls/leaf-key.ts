// The one key every leaf certificate carries, kept in CA_DIR/leaf.key beside the CA's: a start then spends
// no RSA key generation (~140 ms of CPU here, in every worker), and every process of a tree or a fleet on
// one CA_DIR presents the same key. A CA_DIR that cannot be written (a read-only Secret volume) is no
// error: the key is then made at each start and kept in memory only, as it always was before.
// With CA_KEY_PASSPHRASE the file is encrypted with it, as a new ca.key is.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { generateRsa, linkKey, writeTemp } from './key-files.js';
import { errorCode, errorMessage } from '../telemetry/error-message.js';

export const LEAF_KEY_FILE = 'leaf.key';
const LEAF_KEY_BITS = 2048;

export interface LeafKey {
  keyPem: string; // unencrypted PKCS#8, for TLS contexts in this process only
  publicKeyPem: string;
}

/** Where the key came from; `problem` says why a stored key was not used, or why the new one is in memory only. */
export interface LoadedLeafKey {
  key: LeafKey;
  source: 'loaded' | 'created' | 'memory';
  problem?: string;
}

export async function loadOrCreateLeafKey(caDir: string, passphrase: string | null): Promise<LoadedLeafKey> {
  const file = path.join(caDir, LEAF_KEY_FILE);
  let stored: string | null = null;
  try {
    stored = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') return { key: await newKey(), source: 'memory', problem: `cannot read ${file}: ${errorMessage(err)}` };
  }
  let replaced: string | undefined;
  if (stored !== null) {
    const key = parseLeafKey(stored, passphrase);
    if (typeof key !== 'string') return { key, source: 'loaded' };
    replaced = `${file} was not usable (${key}): replaced with a new key`;
  }
  const key = await newKey();
  try {
    const temp = await writeTemp(file, exportKey(key, passphrase), 0o600);
    try {
      // A key that cannot be read is replaced; otherwise the first process to link its key wins.
      if (replaced !== undefined) {
        await fs.rename(temp, file);
        return { key, source: 'created', problem: replaced };
      }
      if (await linkKey(temp, file)) return { key, source: 'created' };
    } finally {
      await fs.rm(temp, { force: true });
    }
    const theirs = parseLeafKey(await fs.readFile(file, 'utf8'), passphrase);
    if (typeof theirs !== 'string') return { key: theirs, source: 'loaded' };
    return { key, source: 'memory', problem: `${file}, written by another process, is not usable (${theirs})` };
  } catch (err) {
    return { key, source: 'memory', problem: `cannot write ${file}: ${errorMessage(err)}` };
  }
}

async function newKey(): Promise<LeafKey> {
  const { privateKey, publicKey } = await generateRsa(LEAF_KEY_BITS);
  return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

function exportKey(key: LeafKey, passphrase: string | null): string {
  if (passphrase === null) return key.keyPem;
  return crypto.createPrivateKey(key.keyPem).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase }).toString();
}

/** The key in pem, or why it cannot serve as the leaf key. */
function parseLeafKey(pem: string, passphrase: string | null): LeafKey | string {
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(passphrase === null ? pem : { key: pem, format: 'pem', passphrase });
  } catch (err) {
    return errorMessage(err);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa' || bits < LEAF_KEY_BITS) return `not an RSA key of ${LEAF_KEY_BITS} bits or more`;
  return {
    keyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: crypto.createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString(),
  };
}
