// The configuration checked against this machine before anything is created or opened (a CA generated,
// the cache wiped of its spool, a port bound): files readable and what they claim to be, directories
// writable, ports distinct and free. Each failure names the variable behind it and how to fix it; an
// operator at 3 a.m. should not have to map "EACCES, mkdir '/docker_mirror_cache/spool'" to a setting.
import crypto from 'node:crypto';
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Config } from '../config/config.js';
import { errorCode, errorMessage } from '../telemetry/error-message.js';

export class StartupError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'StartupError';
  }
}

export async function checkStartup(config: Config): Promise<void> {
  if (config.upstreamCaFile) await checkPem('UPSTREAM_CA_FILE', config.upstreamCaFile, 'certificate');
  if (config.mirrorTls) {
    await checkPem('MIRROR_TLS_CERT', config.mirrorTls.certFile, 'certificate');
    await checkPem('MIRROR_TLS_KEY', config.mirrorTls.keyFile, 'private key');
  }
  const caExists = await Promise.all(['ca.crt', 'ca.key'].map((f) => exists(path.join(config.caDir, f))));
  await checkDirectory('CA_DIR', config.caDir, !caExists.every(Boolean)); // written only to create a CA
  await checkDirectory('CACHE_DIR', config.cacheDir, true);
  await checkPorts(config);
}

/** What a listener's bind failure means, naming the variable that chose the port. */
export function listenError(variable: string, port: number, err: unknown): StartupError {
  const code = errorCode(err);
  if (code === 'EADDRINUSE')
    return new StartupError(variable, `${variable}=${port} is in use by another process: stop it, or choose another port, e.g. ${variable}=${port + 1}`);
  if (code === 'EACCES')
    return new StartupError(
      variable,
      `${variable}=${port} needs privileges this process lacks (ports below 1024): choose a port of 1024 or more, e.g. ${variable}=${port + 3000}`,
    );
  return new StartupError(variable, `cannot listen on ${variable}=${port}: ${code ?? errorMessage(err)}`);
}

async function checkPem(variable: string, file: string, what: 'certificate' | 'private key'): Promise<void> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new StartupError(variable, `${variable}=${file} cannot be read (${errorCode(err)}): point it at a readable PEM ${what} file`);
  }
  const valid = what === 'certificate' ? pemCertificates(text).length > 0 : parsesAsKey(text);
  if (!valid) throw new StartupError(variable, `${variable}=${file} holds no PEM ${what} ("-----BEGIN ...-----" block): point it at a PEM ${what} file`);
}

function pemCertificates(text: string): crypto.X509Certificate[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.flatMap((pem) => {
    try {
      return [new crypto.X509Certificate(pem)];
    } catch {
      // not a certificate: the check reports the file as holding none.
      return [];
    }
  });
}

function parsesAsKey(text: string): boolean {
  try {
    crypto.createPrivateKey(text);
    return true;
  } catch {
    // not a key: that is what this check answers.
    return false;
  }
}

/** The directory (or, when missing, the nearest existing parent it would be created in) must be usable. */
async function checkDirectory(variable: string, dir: string, write: boolean): Promise<void> {
  let target = dir;
  while (!(await exists(target)) && path.dirname(target) !== target) target = path.dirname(target);
  // nothing there to check yet: the caller creates it.
  const stat = await fs.stat(target).catch(() => null);
  if (!stat?.isDirectory()) throw new StartupError(variable, `${variable}=${dir}: ${target} is not a directory: point ${variable} at a directory`);
  const where = target === dir ? dir : `${target} (where ${dir} would be created)`;
  for (const [mode, what] of [[constants.R_OK | constants.X_OK, 'readable'], ...(write ? [[constants.W_OK, 'writable'] as const] : [])] as const) {
    try {
      await fs.access(target, mode);
    } catch (err) {
      if (errorCode(err) === 'EROFS')
        throw new StartupError(variable, `${variable}=${dir}: ${where} is on a read-only filesystem: mount it read-write, or point ${variable} elsewhere`);
      throw new StartupError(variable, `${variable}=${dir}: ${where} is not ${what} by this process (${identity()}): ${ownershipFix(target)}`);
    }
  }
}

function identity(): string {
  return process.getuid ? `uid ${process.getuid()}, gid ${process.getgid?.()}` : 'this user';
}

/** In the image regcache runs as node (uid 1000); volumes a root-run container (rpardini's) left are root's. */
function ownershipFix(dir: string): string {
  if (!process.getuid) return `make ${dir} readable and writable for this user`;
  return `give it to uid ${process.getuid()}, e.g. chown -R ${process.getuid()}:${process.getgid?.()} ${dir}`;
}

async function checkPorts(config: Config): Promise<void> {
  const ports = [
    ['PORT', config.port],
    ['MIRROR_PORT', config.mirrorPort],
    ['ADMIN_PORT', config.adminPort],
  ].filter(([, port]) => port !== 0) as Array<[string, number]>;
  for (const [i, [variable, port]] of ports.entries()) {
    const same = ports.slice(0, i).find(([, other]) => other === port);
    if (same) throw new StartupError(variable, `${variable}=${port} is also ${same[0]}: give each listener its own port`);
  }
  for (const [variable, port] of ports) await checkPortFree(variable, port, config.disableIpv6);
}

/** Binds and releases the port as the listener will (dual stack unless IPv6 is off). */
async function checkPortFree(variable: string, port: number, disableIpv6: boolean): Promise<void> {
  const bind = (host: string) =>
    new Promise<void>((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen({ port, host, ipv6Only: false, exclusive: true }, () => server.close(() => resolve()));
    });
  try {
    await (disableIpv6
      ? bind('0.0.0.0')
      : bind('::').catch((err: NodeJS.ErrnoException) =>
          err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL' ? bind('0.0.0.0') : Promise.reject(err),
        ));
  } catch (err) {
    throw listenError(variable, port, err);
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
