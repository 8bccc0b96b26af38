// The working directory's .env (copied from .env.example): NAME=value lines in the syntax of Node's
// util.parseEnv. Every line is checked first, so a line that is not an assignment stops regcache with
// the file and line number instead of being skipped (Node 20's parser even folds it into the next name).
import fs from 'node:fs';
import { parseEnv } from 'node:util';
import { errorMessage, errorCode } from '../telemetry/error-message.js';

export class EnvFileError extends Error {
  override name = 'EnvFileError';
}

// `export` is allowed, as shells write it; names as POSIX shells accept them.
const ASSIGNMENT = /^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=(.*)$/;
const QUOTES = ['"', "'", '`'];

/** The variables `file` sets; none when it does not exist. The message of an error never quotes a value. */
export function readEnvFile(file: string): Record<string, string> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return {};
    throw new EnvFileError(`cannot read ${file}: ${errorMessage(err)}`);
  }
  const problem = firstProblem(text);
  if (problem) throw new EnvFileError(`${file} line ${problem.line}: ${problem.what}`);
  const values: Record<string, string> = {};
  for (const [name, value] of Object.entries(parseEnv(text))) if (value !== undefined) values[name] = value;
  return values;
}

/**
 * Fills what `env` leaves unset from `file`: a variable the environment sets, even to "", wins (Node's
 * --env-file and process.loadEnvFile agree). Returns the names it set.
 */
export function applyEnvFile(env: Record<string, string | undefined>, file: string): string[] {
  const set: string[] = [];
  for (const [name, value] of Object.entries(readEnvFile(file))) {
    if (env[name] !== undefined) continue;
    env[name] = value;
    set.push(name);
  }
  return set;
}

function firstProblem(text: string): { line: number; what: string } | null {
  const lines = text.split('\n').map((line) => line.replace(/\r$/, '')); // CRLF files too
  let open: { quote: string; line: number } | null = null; // a quoted value that spans lines
  for (const [i, line] of lines.entries()) {
    if (open) {
      if (line.includes(open.quote)) open = null;
      continue;
    }
    if (/^\s*(#.*)?$/.test(line)) continue;
    const assignment = ASSIGNMENT.exec(line);
    if (!assignment) return { line: i + 1, what: 'expected NAME=value, a # comment or a blank line' };
    const value = assignment[1]!.trimStart();
    const quote = QUOTES.find((q) => value.startsWith(q));
    if (quote !== undefined && !value.slice(1).includes(quote)) open = { quote, line: i + 1 };
  }
  return open ? { line: open.line, what: `the value opens a ${open.quote} quote that never closes` } : null;
}
