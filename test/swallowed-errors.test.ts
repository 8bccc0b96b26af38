// tier: unit
// scripts/swallowed-errors.ts, the check `npm test` runs over src/: a catch that drops an error is found
// unless a comment says why or the block logs or rethrows.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { findSwallowed } from '../scripts/swallowed-errors.js';

const lines = (source: string) => findSwallowed('x.ts', source).map((s) => s.line);

describe('swallowed errors', () => {
  it('finds a .catch(() => …) with no comment on its line or the line before', () => {
    assert.deepEqual(lines('const a = 1;\nawait f().catch(() => undefined);\n'), [2]);
    assert.deepEqual(lines('await f().catch(() => undefined); // gone already: nothing to undo\n'), []);
    assert.deepEqual(lines('// the next tick retries\nawait f().catch(() => null);\n'), []);
  });

  it('finds a catch that binds no error unless its block logs, rethrows or says why', () => {
    assert.deepEqual(lines('try {\n  a();\n} catch {\n  return null;\n}\n'), [3]);
    assert.deepEqual(lines('try {\n  a();\n} catch {\n  return null; // not JSON: the caller answers 400\n}\n'), []);
    assert.deepEqual(lines("try {\n  a();\n} catch {\n  log.warn({}, 'a failed');\n}\n"), []);
    assert.deepEqual(lines("try {\n  a();\n} catch {\n  throw new Error('b');\n}\n"), []);
  });

  it('leaves a catch that names its error to the reader (it is handled, whatever it does)', () => {
    assert.deepEqual(lines('try {\n  a();\n} catch (err) {\n  return String(err);\n}\nawait f().catch((err: Error) => log.warn(err));\n'), []);
  });
});
