// `npm run soak`: the soak for SOAK_MINUTES (default 10), seed SOAK_SEED (default: a new one, printed).
// Prints the report, appends its figures to docs/benchmarks.md (the "Soak" section), and exits 1 when an
// invariant failed. The report's files (report.json, report.md, resources.png) stay in SOAK_OUT (default
// a directory under the OS temp dir named by the seed).
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { reportMarkdown, runSoak } from './soak.js';

const BENCHMARKS = path.resolve(import.meta.dirname, '../../docs/benchmarks.md');
const START = '<!-- soak:start -->';
const END = '<!-- soak:end -->';
const SECTION = `## Soak under faults (npm run soak, test/soak/)

Mixed pulls through both configurations (WORKERS=2 on a small CACHE_MAX_SIZE; two replicas on Ceph RGW behind
haproxy) while faults run on a seeded schedule; what each run drove and checked is in docs/architecture.md
("The soak"). Each \`npm run soak\` appends its run below.

${START}
${END}
`;

const minutes = Number(process.env.SOAK_MINUTES ?? 10);
if (!(minutes > 0)) throw new Error(`SOAK_MINUTES must be a positive number of minutes, not ${process.env.SOAK_MINUTES}`);
const seed = process.env.SOAK_SEED ? Number(process.env.SOAK_SEED) : undefined;
if (seed !== undefined && !Number.isInteger(seed)) throw new Error(`SOAK_SEED must be an integer, not ${process.env.SOAK_SEED}`);

const report = await runSoak({ minutes, ...(seed !== undefined ? { seed } : {}), ...(process.env.SOAK_OUT ? { outDir: process.env.SOAK_OUT } : {}) });
const entry = `### ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC\n\n${reportMarkdown(report)}\nResource curves: \`${report.png}\` (not committed).\n`;
process.stdout.write(entry);
let doc = await readFile(BENCHMARKS, 'utf8');
if (!doc.includes(END)) doc = doc.trimEnd() + '\n\n' + SECTION;
await writeFile(BENCHMARKS, doc.replace(END, `${entry}\n${END}`));
process.stdout.write(`appended to ${BENCHMARKS}\n`);
process.exitCode = report.invariants.every((i) => i.passed) ? 0 : 1;
