// A node:test reporter for test/harness/run-tests.ts: one JSON line per finished test (suites left out), so
// the runner can count passes, failures and skips, and name every skip with its reason, across files; and
// one per test started and ended, so that a file that times out names the test it was stuck in.
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

/** A test (or suite) began or ended running: on a time-out the runner names what was still running. */
export interface TestProgress {
  progress: 'start' | 'end';
  name: string;
  file?: string;
}

export default async function* testEvents(source: AsyncIterable<{ type: string; data: TestEventData }>): AsyncGenerator<string> {
  for await (const event of source) {
    // test:dequeue comes right before a test runs, test:complete when it ended (test:pass comes later, in order).
    if (event.type === 'test:dequeue' || event.type === 'test:complete') {
      const progress: TestProgress = { progress: event.type === 'test:dequeue' ? 'start' : 'end', name: event.data.name };
      if (event.data.file !== undefined) progress.file = event.data.file;
      yield JSON.stringify(progress) + '\n';
      continue;
    }
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
