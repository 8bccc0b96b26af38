// Which users each door of regcache asks for, from PROXY_AUTH, MIRROR_AUTH and ADMIN_AUTH. PROXY_AUTH
// closes every door: the mirror and the admin endpoints ask for its users unless their own variable
// names other users, or "none" to leave that door open (said at startup as a warning).
import { NO_AUTH, type Config } from '../config/config.js';
import type { PasswordGuard } from './password-guard.js';
import { UserSet } from './user-set.js';

export interface Doors {
  proxy: UserSet | null; // CONNECT and forward requests (Proxy-Authorization); null: open
  mirror: UserSet | null; // the registry mirror (Authorization)
  admin: UserSet | null; // /api/v1/*, /metrics, /setup/*, the mirror's /v2/_catalog (Authorization)
}

export function loadDoors(
  config: Pick<Config, 'proxyAuth' | 'mirrorAuth' | 'adminAuth' | 'mirrorPort'>,
  guard: PasswordGuard,
): { doors: Doors; warnings: string[] } {
  const proxy = config.proxyAuth === null ? null : UserSet.load(config.proxyAuth, 'PROXY_AUTH', guard);
  const warnings: string[] = [];
  // One UserSet per variable: a door that inherits PROXY_AUTH shares its caches of verdicts.
  const door = (value: string | null, variable: string): UserSet | null => {
    if (value === null) return proxy;
    if (value !== NO_AUTH) return UserSet.load(value, variable, guard);
    return null;
  };
  const mirror = door(config.mirrorAuth, 'MIRROR_AUTH');
  const admin = door(config.adminAuth, 'ADMIN_AUTH');
  if (proxy && config.mirrorAuth === NO_AUTH && config.mirrorPort !== 0) {
    warnings.push('MIRROR_AUTH=none: the registry mirror serves anyone who can reach it, although PROXY_AUTH is set');
  }
  if (proxy && config.adminAuth === NO_AUTH) {
    warnings.push(
      "ADMIN_AUTH=none: /metrics, /api/v1/*, /setup/* and the mirror's /v2/_catalog are open to anyone who can reach them, although PROXY_AUTH is set",
    );
  }
  return { doors: { proxy, mirror, admin }, warnings };
}
