// Writing a private key so that of processes starting at once on one empty CA_DIR (a fleet on one volume)
// exactly one key ends up in place, whole, 0600, and the others can load it: the CA's key and the leaf key.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { errorCode } from '../telemetry/error-message.js';

export function generateRsa(bits: number): Promise<crypto.KeyPairKeyObjectResult> {
  return new Promise((resolve, reject) =>
    crypto.generateKeyPair('rsa', { modulusLength: bits }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey }))),
  );
}

/** Writes and syncs a temp file beside file; returns its name. */
export async function writeTemp(file: string, data: string, mode: number): Promise<string> {
  // Random, not the pid: in a container the pid is the same after every restart.
  const tmp = `${file}.${crypto.randomBytes(6).toString('hex')}.tmp`;
  const handle = await fs.open(tmp, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode); // the umask may have narrowed it
    await handle.sync();
  } finally {
    await handle.close();
  }
  return tmp;
}

/** Puts the key in place unless one is there (false). Without hard links (some network and FUSE filesystems), a rename. */
export async function linkKey(temp: string, keyFile: string): Promise<boolean> {
  try {
    await fs.link(temp, keyFile);
    return true;
  } catch (err) {
    const code = errorCode(err);
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
  }
  await fs.rename(temp, keyFile); // the race is open again there: provision the CA before starting a fleet on it
  return true;
}
