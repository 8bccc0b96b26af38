// Which CONNECT targets are intercepted (decrypted and cached); everything else is tunnelled untouched.
// Patterns: "host", "host:port", "*.domain" (any depth below domain, not domain itself), "*.domain:port".
// A pattern without a port means 443: "registry.example" must not also claim that host's SSH, its admin
// port or a second server on another port, whose answers would then be mixed with the registry's.

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
    const h = host.toLowerCase().replace(/\.$/, '');
    return this.exact.has(`${h}:${port}`) || this.suffixes.some((s) => h.endsWith(s.suffix) && s.port === port);
  }
}
