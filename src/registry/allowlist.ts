// Which CONNECT targets are intercepted (decrypted and cached); everything else is tunnelled untouched.
// Patterns: "host", "host:port", "*.domain" (any depth below domain, not domain itself), "*.domain:port".

export class Allowlist {
  private readonly exact = new Set<string>(); // "host" or "host:port"
  private readonly suffixes: Array<{ suffix: string; port: number | null }> = [];

  constructor(patterns: string[]) {
    for (const raw of patterns) {
      const p = raw.toLowerCase();
      const m = /^(\*\.)?(.+?)(?::(\d+))?$/.exec(p);
      if (!m) continue;
      if (m[1]) this.suffixes.push({ suffix: '.' + m[2], port: m[3] ? Number(m[3]) : null });
      else this.exact.add(m[3] ? `${m[2]}:${m[3]}` : m[2]!);
    }
  }

  matches(host: string, port: number): boolean {
    const h = host.toLowerCase().replace(/\.$/, '');
    if (this.exact.has(h) || this.exact.has(`${h}:${port}`)) return true;
    return this.suffixes.some((s) => h.endsWith(s.suffix) && (s.port === null || s.port === port));
  }
}
