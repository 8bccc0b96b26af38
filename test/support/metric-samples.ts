// Reads a Prometheus exposition (GET /metrics) in tests: one metric's samples by their label set.

/** Sample values of one metric, by its label set as written ('cache="HIT",kind="blob"'; '' without labels). */
export function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`).exec(line);
    if (m) out.set(m[1] ?? '', Number(m[2]));
  }
  return out;
}
