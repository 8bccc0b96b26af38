// docs/benchmarks.md holds one section per benchmark between its own markers; each bench rewrites only
// what lies between its markers, so the load and peer benchmarks can both update the file.
import { readFile, writeFile } from 'node:fs/promises';

const INTRO = 'Benchmark results, each section written by the benchmark that measured it (`npm run bench`).\n';
const SECTIONS = ['peer-bench', 'load-bench']; // in this order when the file is created

const start = (name: string): string => `<!-- ${name}:start -->`;
const end = (name: string): string => `<!-- ${name}:end -->`;

export async function writeDocSection(file: string, name: string, content: string): Promise<void> {
  let text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
    return `${INTRO}\n${SECTIONS.map((s) => `${start(s)}\n${end(s)}\n`).join('\n')}`;
  });
  if (!text.includes(start(name)) || !text.includes(end(name))) text = `${text.trimEnd()}\n\n${start(name)}\n${end(name)}\n`;
  const from = text.indexOf(start(name)) + start(name).length;
  const to = text.indexOf(end(name), from);
  if (to < 0) throw new Error(`${file}: ${end(name)} comes before ${start(name)}`);
  await writeFile(file, `${text.slice(0, from)}\n${content.trim()}\n${text.slice(to)}`);
}
