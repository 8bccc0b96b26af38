// The score per module and every surviving mutant, from Stryker's JSON reports (npm run mutate): what
// docs/mutation-testing.md is written from. Score = (killed + timed out) / (all but those that did not
// compile or were ignored), as Stryker counts it.
import { readFileSync } from 'node:fs';

interface Mutant {
  mutatorName: string;
  replacement?: string;
  status: string;
  location: { start: { line: number; column: number } };
}
interface Report {
  files: Record<string, { source: string; mutants: Mutant[] }>;
}

const rows: string[][] = [['module', 'mutants', 'killed', 'timeout', 'survived', 'no cover', 'score']];
const survivors: string[] = [];
for (const path of process.argv.slice(2)) {
  const report = JSON.parse(readFileSync(path, 'utf8')) as Report;
  for (const [file, { source, mutants }] of Object.entries(report.files)) {
    const count = (status: string) => mutants.filter((m) => m.status === status).length;
    const valid = mutants.filter((m) => !['CompileError', 'RuntimeError', 'Ignored'].includes(m.status)).length;
    const detected = count('Killed') + count('Timeout');
    rows.push([
      file,
      String(valid),
      String(count('Killed')),
      String(count('Timeout')),
      String(count('Survived')),
      String(count('NoCoverage')),
      valid ? `${((100 * detected) / valid).toFixed(1)}%` : '-',
    ]);
    const lines = source.split('\n');
    for (const m of mutants.filter((x) => x.status === 'Survived' || x.status === 'NoCoverage')) {
      const { line, column } = m.location.start;
      const replacement = (m.replacement ?? '').replace(/\s+/g, ' ').slice(0, 100);
      survivors.push(`${file}:${line}:${column} ${m.mutatorName} -> ${replacement}\n    ${(lines[line - 1] ?? '').trim().slice(0, 140)}`);
    }
  }
}
const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
console.log(`\nSurviving mutants (${survivors.length}):`);
for (const s of survivors) console.log(s);
