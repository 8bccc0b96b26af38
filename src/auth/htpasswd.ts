// The users a PROXY_AUTH, MIRROR_AUTH or ADMIN_AUTH value names: an htpasswd file (bcrypt "$2a$/$2b$/$2y$"
// and "{SHA}" entries) or an inline "user:pass user2:pass2" list; and the stand-in secrets that make a
// check of an unknown user cost what a check of a known one costs.
import crypto from 'node:crypto';
import fs from 'node:fs';
import bcrypt from 'bcryptjs';
import { ConfigError } from '../config/config.js';
import { errorCode } from '../telemetry/error-message.js';

export type Secret = { kind: 'bcrypt'; hash: string } | { kind: 'sha1'; digest: Buffer } | { kind: 'plain'; sha256: Buffer };

export interface Users {
  byName: Map<string, Secret>;
  description: string; // for logs: the file, or how many inline users; never a password
  /** Checked instead when the user is unknown: the same kind (and bcrypt cost) as the entries. */
  stranger: Secret;
  /**
   * A file that mixes bcrypt with other entries: checked after a non-bcrypt entry, so that every check
   * costs one bcrypt and its duration does not tell which kind of entry (if any) a user has.
   */
  padding: Secret | null;
}

/** From the variable's value: a readable file path, or an inline list of user:pass. */
export function loadUsers(value: string, variable: string): Users {
  if (value.startsWith('/') || value.startsWith('.') || (!value.includes(':') && fs.existsSync(value))) {
    let text: string;
    try {
      text = fs.readFileSync(value, 'utf8');
    } catch (err) {
      throw new ConfigError(variable, value, `a readable htpasswd file (${errorCode(err)}), e.g. ${variable}=/etc/regcache/htpasswd`);
    }
    return withStandIns(parseHtpasswd(variable, value, text), `htpasswd ${value}`);
  }
  const byName = new Map<string, Secret>();
  for (const item of value.split(/[\s,]+/).filter(Boolean)) {
    const colon = item.indexOf(':');
    if (colon <= 0 || colon === item.length - 1) {
      throw new ConfigError(variable, '(inline list)', `an htpasswd file path or "user:pass user2:pass2", e.g. ${variable}=/etc/regcache/htpasswd`);
    }
    byName.set(item.slice(0, colon), { kind: 'plain', sha256: sha256(item.slice(colon + 1)) });
  }
  return withStandIns(byName, `${byName.size} inline users`);
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

function withStandIns(byName: Map<string, Secret>, description: string): Users {
  const secrets = [...byName.values()];
  const bcryptCosts = secrets.flatMap((s) => (s.kind === 'bcrypt' ? [Number(s.hash.slice(4, 6))] : []));
  if (bcryptCosts.length > 0) {
    // A salt of the most common cost and a hash part no password produces: a full bcrypt run, then no match.
    const dummy: Secret = { kind: 'bcrypt', hash: bcrypt.genSaltSync(mostCommon(bcryptCosts)) + '.'.repeat(31) };
    return { byName, description, stranger: dummy, padding: bcryptCosts.length < secrets.length ? dummy : null };
  }
  const random = crypto.randomBytes(32);
  const stranger: Secret = secrets.some((s) => s.kind === 'sha1') ? { kind: 'sha1', digest: random.subarray(0, 20) } : { kind: 'plain', sha256: random };
  return { byName, description, stranger, padding: null };
}

function mostCommon(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0]![0];
}

export function sha256(text: string): Buffer {
  return crypto.createHash('sha256').update(text).digest();
}
