// tier: unit
// errorMessage: the one way an unknown thrown value becomes text in regcache's log lines and answers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errorCode, errorMessage } from '../src/telemetry/error-message.js';

describe('errorMessage', () => {
  it("is an Error's message, with its errno code when the message lacks it", () => {
    assert.equal(errorMessage(new Error('boom')), 'boom');
    assert.equal(errorMessage(Object.assign(new Error('no space left'), { code: 'ENOSPC' })), 'no space left (ENOSPC)');
    assert.equal(errorMessage(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })), 'ENOSPC: no space left on device');
  });

  it('says what anything else thrown was, never undefined', () => {
    assert.equal(errorMessage('plain'), 'plain');
    assert.equal(errorMessage({ status: 500 }), '{"status":500}');
    assert.equal(errorMessage(undefined), 'undefined');
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    assert.equal(errorMessage(cycle), '[object Object]');
  });

  it('reads an errno code only when there is one', () => {
    assert.equal(errorCode(Object.assign(new Error('x'), { code: 'ECONNRESET' })), 'ECONNRESET');
    assert.equal(errorCode(new Error('x')), undefined);
    assert.equal(errorCode(null), undefined);
    assert.equal(errorCode('ENOENT'), undefined);
  });
});
