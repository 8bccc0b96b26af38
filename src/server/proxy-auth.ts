// PROXY_AUTH (and MIRROR_AUTH): who may use the proxy (the mirror). An htpasswd file (bcrypt "$2a$/$2b$/$2y$" and "{SHA}" entries) or an
// inline "user:pass user2:pass2" list. CONNECT and forward requests need a valid Proxy-Authorization:
// Basic header; requests to the proxy itself (/ca.crt, /setup/*) do not. bcrypt is slow on purpose, so a
// header that passed is remembered for a few minutes (as a hash, never the header itself).
import crypto from 'node:crypto';
import fs from 'node:fs';
import bcrypt from 'bcryptjs';
import { ConfigError } from '../config.js';

type Secret = { kind: 'bcrypt'; hash: string } | { kind: 'sha1'; digest: Buffer } | { kind: 'plain'; sha256: Buffer };

const REMEMBER_MS = 5 * 60 * 1000;
const REMEMBER_MAX = 1000;

export class ProxyAuth {
  private readonly remembered = new Map<string, number>(); // sha256(header) -> expiry

  private constructor(
    private readonly users: Map<string, Secret>,
    readonly description: string,
  ) {}

  /** From PROXY_AUTH: a readable file path, or an inline list of user:pass. */
  static load(value: string, variable = 'PROXY_AUTH'): ProxyAuth {
    if (value.startsWith('/') || value.startsWith('.') || (!value.includes(':') && fs.existsSync(value))) {
      let text: string;
      try {
        text = fs.readFileSync(value, 'utf8');
      } catch (err) {
        throw new ConfigError(variable, value, `a readable htpasswd file (${(err as NodeJS.ErrnoException).code}), e.g. ${variable}=/etc/regcache/htpasswd`);
      }
      return new ProxyAuth(parseHtpasswd(variable, value, text), `htpasswd ${value}`);
    }
    const users = new Map<string, Secret>();
    for (const item of value.split(/[\s,]+/).filter(Boolean)) {
      const colon = item.indexOf(':');
      if (colon <= 0 || colon === item.length - 1) {
        throw new ConfigError(variable, '(inline list)', `an htpasswd file path or "user:pass user2:pass2", e.g. ${variable}=/etc/regcache/htpasswd`);
      }
      users.set(item.slice(0, colon), { kind: 'plain', sha256: sha256(item.slice(colon + 1)) });
    }
    return new ProxyAuth(users, `${users.size} inline users`);
  }

  /** Whether a Proxy-Authorization header value names a user with the right password. */
  async check(header: string | undefined): Promise<boolean> {
    if (!header) return false;
    const key = sha256(header).toString('hex');
    const expiry = this.remembered.get(key);
    if (expiry !== undefined && expiry > Date.now()) return true;
    const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    if (!m) return false;
    const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const secret = this.users.get(decoded.slice(0, colon));
    const password = decoded.slice(colon + 1);
    if (!secret || !(await matches(secret, password))) return false;
    if (this.remembered.size >= REMEMBER_MAX) this.remembered.clear();
    this.remembered.set(key, Date.now() + REMEMBER_MS);
    return true;
  }
}

function parseHtpasswd(variable: string, file: string, text: string): Map<string, Secret> {
  const users = new Map<string, Secret>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (colon <= 0) throw new ConfigError(variable, file, `user:hash lines (line ${i + 1} is not one)`);
    if (/^\$2[aby]\$\d\d\$/.test(hash)) users.set(user, { kind: 'bcrypt', hash });
    else if (hash.startsWith('{SHA}')) users.set(user, { kind: 'sha1', digest: Buffer.from(hash.slice(5), 'base64') });
    else throw new ConfigError(variable, file, `bcrypt (htpasswd -B) or SHA (htpasswd -s) entries; line ${i + 1} (${user}) is neither`);
  });
  return users;
}

async function matches(secret: Secret, password: string): Promise<boolean> {
  switch (secret.kind) {
    case 'bcrypt':
      return bcrypt.compare(password, secret.hash);
    case 'sha1':
      return safeEqual(crypto.createHash('sha1').update(password).digest(), secret.digest);
    case 'plain':
      return safeEqual(sha256(password), secret.sha256);
  }
}

function sha256(text: string): Buffer {
  return crypto.createHash('sha256').update(text).digest();
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}
