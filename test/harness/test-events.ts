// A node:test reporter for test/harness/run-tests.ts: one JSON line per finished test (suites left out), so
// the runner can count passes, failures and skips, and name every skip with its reason, across files.
// Loaded by `--test-reporter=./test/harness/test-events.ts` beside the spec reporter.

/** One line of the reporter's output. */
export interface TestOutcome {
  name: string;
  /** 'pass', 'fail', 'skip' or 'todo'. */
  outcome: 'pass' | 'fail' | 'skip' | 'todo';
  /** The reason given to t.skip() / { skip } / { todo }, or '' when none was. */
  reason: string;
  /** The failure's message, for the summary. */
  error?: string;
  /** The file the test is in (several files share a process in the unit tier). */
  file?: string;
}

interface TestEventData {
  name: string;
  file?: string;
  skip?: string | boolean;
  todo?: string | boolean;
  details?: { type?: string; error?: { message?: string; cause?: { message?: string } } };
}

const reason = (value: string | boolean | undefined): string => (typeof value === 'string' ? value : '');

export default async function* testEvents(source: AsyncIterable<{ type: string; data: TestEventData }>): AsyncGenerator<string> {
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { data } = event;
    if (data.details?.type === 'suite') continue;
    let line: TestOutcome;
    if (data.skip !== undefined && data.skip !== false) line = { name: data.name, outcome: 'skip', reason: reason(data.skip) };
    else if (data.todo !== undefined && data.todo !== false) line = { name: data.name, outcome: 'todo', reason: reason(data.todo) };
    else if (event.type === 'test:pass') line = { name: data.name, outcome: 'pass', reason: '' };
    else {
      const error = data.details?.error;
      line = { name: data.name, outcome: 'fail', reason: '', error: error?.cause?.message ?? error?.message ?? 'failed' };
    }
    if (data.file !== undefined) line.file = data.file;
    yield JSON.stringify(line) + '\n';
  }
}
