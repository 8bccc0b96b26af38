// Lists errors that src/ swallows without saying why: a `catch` that binds no error, or a `.catch(() => …)`
// that drops it, with neither a comment on its line or the line before nor a log call or a throw in the
// block it opens. Each must say why losing the error is right (or log it). Run by `npm test`; exits 1
// when it finds one. Usage: node --import tsx scripts/swallowed-errors.ts [dir]
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

const DROPPING_CATCH = /\.catch\(\(\)\s*=>/; // .catch(() => undefined), null, false, {} …: the error is not even named
const UNBOUND_CATCH = /\bcatch\s*\{/; // try { … } catch { … }
const COMMENT = /\/\/|\/\*|^\s*\*/;
const SAYS_SOMETHING = /\blog\.(warn|error|info|debug|fatal|trace)\b|\bthrow\b|\breject\(|\bfail\(/;

export interface Swallowed {
  file: string;
  line: number;
  text: string;
}

export function findSwallowed(file: string, source: string): Swallowed[] {
  const lines = source.split('\n');
  const found: Swallowed[] = [];
  lines.forEach((text, i) => {
    if (!DROPPING_CATCH.test(text) && !UNBOUND_CATCH.test(text)) return;
    if (COMMENT.test(text) || COMMENT.test(lines[i - 1] ?? '')) return;
    if (UNBOUND_CATCH.test(text) && blockOf(lines, i).some((l) => SAYS_SOMETHING.test(l) || COMMENT.test(l))) return;
    found.push({ file, line: i + 1, text: text.trim() });
  });
  return found;
}

/** The lines of the block a `catch {` on line i opens (to its closing brace at the same depth). */
function blockOf(lines: string[], i: number): string[] {
  const block: string[] = [];
  let depth = 0;
  for (let j = i; j < lines.length; j++) {
    const text = j === i ? lines[j]!.slice(lines[j]!.search(UNBOUND_CATCH)) : lines[j]!;
    for (const ch of text) depth += ch === '{' ? 1 : ch === '}' ? -1 : 0;
    if (j > i) block.push(text);
    if (depth <= 0 && j > i) break;
  }
  return block;
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => path.join(e.parentPath, e.name));
}

/** Prints every error swallowed under `dir` (default src/); how many. */
export async function reportSwallowed(dir = path.resolve(import.meta.dirname, '../src')): Promise<number> {
  const found = (await Promise.all((await filesUnder(dir)).map(async (f) => findSwallowed(path.relative(process.cwd(), f), await readFile(f, 'utf8'))))).flat();
  for (const s of found) console.error(`${s.file}:${s.line}: an error swallowed without a comment saying why or a log line: ${s.text}`);
  if (found.length > 0) console.error(`${found.length} swallowed error(s): say why in a comment, or log it`);
  return found.length;
}

async function main(): Promise<void> {
  if ((await reportSwallowed(process.argv[2])) > 0) process.exit(1);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
