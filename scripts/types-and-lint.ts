// The type check and the lint of `npm test`, on one TypeScript program: test/tsconfig.json's, which holds
// src/, test/, bench/ and scripts/. It reports what `tsc -p test/tsconfig.json --noEmit` and `npm run lint`
// (eslint with no warning allowed, then scripts/swallowed-errors.ts) report, for less CPU than the two
// apart: eslint's type-aware rules read the types the check already worked out, where on their own each
// built and checked the program (2026-12-07, as from a fresh clone: 15 + 28 s of CPU apart, 30 s together).
// Usage: node --import tsx scripts/types-and-lint.ts; exits 1 on any finding.
import path from 'node:path';
import { ESLint } from 'eslint';
import ts from 'typescript';
import { reportSwallowed } from './swallowed-errors.js';

const ROOT = path.resolve(import.meta.dirname, '..');

function typeCheck(): { program: ts.Program; errors: number } {
  const host: ts.ParseConfigFileHost = {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  };
  const config = ts.getParsedCommandLineOfConfigFile(path.join(ROOT, 'test/tsconfig.json'), { incremental: false }, host)!;
  const program = ts.createProgram({ rootNames: config.fileNames, options: config.options, projectReferences: config.projectReferences });
  const diagnostics = [...config.errors, ...ts.getPreEmitDiagnostics(program)];
  if (diagnostics.length > 0)
    process.stdout.write(
      (process.stdout.isTTY ? ts.formatDiagnosticsWithColorAndContext : ts.formatDiagnostics)(diagnostics, {
        getCanonicalFileName: (f) => f,
        getCurrentDirectory: () => ROOT,
        getNewLine: () => '\n',
      }),
    );
  return { program, errors: diagnostics.length };
}

async function lint(program: ts.Program): Promise<number> {
  // The project's eslint.config.js as it is, but with this program instead of one of its own.
  const eslint = new ESLint({ cwd: ROOT, overrideConfig: { languageOptions: { parserOptions: { programs: [program] } } } });
  const results = await eslint.lintFiles(['src', 'test', 'bench', 'scripts']);
  const problems = results.reduce((n, r) => n + r.errorCount + r.warningCount, 0);
  if (problems > 0) process.stdout.write(await (await eslint.loadFormatter('stylish')).format(results));
  return problems;
}

const { program, errors } = typeCheck();
const problems = await lint(program);
const swallowed = await reportSwallowed(path.join(ROOT, 'src'));
if (errors + problems + swallowed > 0) {
  process.stdout.write(`types: ${errors} error(s); lint: ${problems} problem(s); swallowed errors: ${swallowed}\n`);
  process.exit(1);
}
