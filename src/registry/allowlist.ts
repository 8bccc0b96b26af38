// Which CONNECT targets are intercepted (decrypted and cached); everything else is tunnelled untouched.
// Patterns: "host", "host:port", "*.domain" (any depth below domain, not domain itself), "*.domain:port".
// A pattern without a port means 443: "registry.example" must not also claim that host's SSH, its admin
// port or a second server on another port, whose answers would then be mixed with the registry's.
import { registryDisplayName } from '../reference/registry-name.js';

const DEFAULT_PORT = 443;

export class Allowlist {
  private readonly exact = new Set<string>(); // "host:port"
  private readonly suffixes: Array<{ suffix: string; port: number }> = [];

  constructor(patterns: string[]) {
    for (const raw of patterns) {
      const m = /^(\*\.)?(.+?)(?::(\d+))?$/.exec(raw.toLowerCase());
      if (!m) continue;
      const port = m[3] ? Number(m[3]) : DEFAULT_PORT;
      if (m[1]) this.suffixes.push({ suffix: '.' + m[2], port });
      else this.exact.add(`${m[2]}:${port}`);
    }
  }

  matches(host: string, port: number): boolean {
    return this.entryOf(host, port) !== null;
  }

  /**
   * The allowlist entry an origin ("host" or "host:port", as request lines name it) falls under, as a
   * metric label: the host for an exact entry (with its port when not 443), the pattern for a wildcard;
   * null off the allowlist. Bounded by the allowlist, whatever hosts clients name.
   */
  entryOf(host: string, port: number): string | null {
    const h = host.toLowerCase().replace(/\.$/, '');
    const withPort = port === DEFAULT_PORT ? h : `${h}:${port}`;
    if (this.exact.has(`${h}:${port}`)) return withPort;
    const suffix = this.suffixes.find((s) => h.endsWith(s.suffix) && s.port === port);
    if (!suffix) return null;
    return `*${suffix.suffix}${port === DEFAULT_PORT ? '' : `:${port}`}`;
  }

  /** An origin ("host" or "host:port", as request lines name it) as a metric label: its entry (Docker Hub as docker.io), else "other". */
  label(origin: string): string {
    const m = /^(.*?)(?::(\d+))?$/.exec(origin);
    const entry = m ? this.entryOf(m[1] ?? '', Number(m[2] ?? DEFAULT_PORT)) : null;
    return entry === null ? 'other' : registryDisplayName(entry);
  }
}
