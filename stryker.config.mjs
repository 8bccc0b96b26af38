// StrykerJS over the security modules (npm run mutate; docs/mutation-testing.md). One group of modules per
// run (MUTATE_GROUP), each with the fast in-process test files that cover it: Stryker's command runner runs
// them once per mutant (node --test, through tsx, in a sandbox copy of the tree), so a run stays bounded by
// what those files take, not by the whole suite. Parts of a file (the access facts of the two indexes) are
// chosen by the lines that match anchors below, so that the ranges follow the code as it moves.
import { readFileSync } from 'node:fs';

/**
 * "file:first-last" for each line of `file` matching one of `anchors`, widened to the end of the bracket it
 * opens there (a method, a call spanning lines), so that a whole method is mutated when its signature matches.
 */
function linesOf(file, anchors) {
  const lines = readFileSync(new URL(file, import.meta.url), 'utf8').split('\n');
  const ranges = [];
  for (let i = 0; i < lines.length; i++) {
    if (!anchors.some((a) => a.test(lines[i]))) continue;
    let depth = 0;
    let last = i;
    for (let j = i; j < lines.length; j++) {
      for (const c of lines[j]) depth += '{(['.includes(c) ? 1 : ')}]'.includes(c) ? -1 : 0;
      last = j;
      if (depth <= 0) break;
    }
    ranges.push(`${file}:${i + 1}-${last + 1}`);
    i = last;
  }
  if (ranges.length === 0) throw new Error(`stryker.config.mjs: no anchor matches ${file} any more; update the anchors`);
  return ranges;
}

const node = (files) => `node --import tsx --test --test-reporter=dot ${files.join(' ')}`;

/** Module group -> the files mutated and the test files run against each mutant. */
export const groups = {
  // Which destinations regcache connects to (#45), and the address classes it judges by.
  policy: {
    mutate: ['src/upstream/destination-policy.ts', 'src/reference/address-ranges.ts'],
    tests: ['test/destination-policy.test.ts', 'test/address-ranges.test.ts'],
  },
  // Password checks behind every door: verdict caches, throttle, user files, doors (bcrypt a stand-in).
  auth: {
    mutate: ['src/auth/*.ts', '!src/auth/bcrypt-worker.ts'],
    tests: ['test/password-checks.test.ts', 'test/auth-doors-in-process.test.ts'],
  },
  // The bcrypt worker thread: off the event loop at nice 19, its bounded queue (a nice-19 thread on a busy
  // machine is slow: a group of its own).
  bcrypt: {
    mutate: ['src/auth/bcrypt-worker.ts'],
    tests: ['test/bcrypt-worker.test.ts'],
  },
  // Digests: which are stored, and the reader that serves stored bytes only when they hash to theirs.
  digest: {
    mutate: ['src/reference/digest.ts', 'src/cache/verified-file-reader.ts'],
    tests: ['test/digests.test.ts', 'test/verified-file-reader.test.ts', 'test/request-rules.test.ts'],
  },
  // The one gate: whether stored content may be served to this request (issue 20), asked by every door.
  gate: {
    mutate: ['src/registry/content-gate.ts'],
    tests: ['test/content-access.test.ts', 'test/s3-private-content.test.ts', 'test/fill-coordinator.test.ts'],
  },
  // Each store's facts of who may read stored content, and the decision made from them.
  access: {
    mutate: [
      'src/registry/content-access.ts',
      ...linesOf('src/cache/s3/bucket-index.ts', [
        /async setAccess\(/,
        /this\.layout\.accessOf\(/,
        /accessOf\(access\.map/,
        /const accessByKey = groupBy\(/,
        /const a = accessOf\(/,
        /if \(a && a !== known\.access\)/,
        /accessOf\(accessByKey/,
        /if \(access \?\? known\?\.access\)/,
        /^function accessOf\(/,
      ]),
      ...linesOf('src/cache/entry-index.ts', [/async setAccess\(/, /case 'acc': \{/]),
    ],
    tests: [
      'test/content-access.test.ts',
      'test/fill-coordinator.test.ts',
      'test/s3-private-content.test.ts',
      'test/entry-index.test.ts',
      'test/s3-redirect.test.ts',
    ],
  },
};

const name = process.env.MUTATE_GROUP ?? 'policy';
const chosen = groups[name];
if (!chosen) throw new Error(`MUTATE_GROUP=${name}: one of ${Object.keys(groups).join(', ')}`);
// A second look at some mutants (the survivors of a run, after a test was added): MUTATE_ONLY names the
// ranges ("file:first-last", space-separated), MUTATE_TESTS the test files; the report gets a suffix.
const only = process.env.MUTATE_ONLY?.split(/\s+/).filter(Boolean);
const group = {
  mutate: only?.length ? only : chosen.mutate,
  tests: process.env.MUTATE_TESTS?.split(/\s+/).filter(Boolean) ?? chosen.tests,
};
const report = only?.length ? `${name}-recheck` : name;

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  mutate: group.mutate,
  testRunner: 'command',
  commandRunner: { command: node(group.tests) },
  // The machine is shared: one mutant at a time (npm run mutate runs Stryker at nice 10 too).
  concurrency: 1,
  coverageAnalysis: 'off', // the command runner knows no coverage: every mutant runs the group's files
  timeoutMS: 20_000,
  reporters: ['clear-text', 'progress-append-only', 'json'],
  jsonReporter: { fileName: `reports/mutation/${report}.json` },
  clearTextReporter: { allowEmojis: false, logTests: false, reportScoreTable: true },
  // What the sandbox needs: src, test and the configs; nothing generated.
  ignorePatterns: ['dist', 'bench', 'docs', 'deploy', 'certs', 'reports', '.test-tmp', '.test-artifacts', '.tsbuild-test'],
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
  thresholds: { high: 90, low: 75, break: null },
};
