// tier: unit
// LOG_FORMAT=pretty's lines in process (fast tier): a request line starts with its cache status
// (coloured on a terminal), then registry, repository, kind, short digest, size and time; other lines
// with their level; one record is always one line.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { prettyLine } from '../src/telemetry/pretty-lines.js';

const DIGEST = 'sha256:3f8a1b2c9d0e' + 'f'.repeat(52);
const ANSI = /\u001b\[[0-9;]*m/g;
const plain = (s: string) => s.replace(ANSI, '');

describe('pretty log lines', () => {
  const request = {
    level: 'info',
    time: '2026-01-01T12:34:56.789Z',
    cache: 'HIT',
    kind: 'blob',
    method: 'GET',
    host: 'registry-1.docker.io',
    repository: 'library/alpine',
    path: `/v2/library/alpine/blobs/${DIGEST}`,
    status: 200,
    bytes: 3_623_807,
    ms: 4.1,
    client: '10.0.0.7',
    digest: DIGEST,
    msg: 'request',
  };

  it('puts the cache status first, then registry, repository, kind, short digest, size, time', () => {
    const text = prettyLine(request, false);
    assert.ok(text.endsWith('\n') && text.split('\n').length === 2, 'one line');
    const columns = text.trim().split(/\s+/);
    assert.deepEqual(columns.slice(0, 9), ['HIT', 'docker.io', 'library/alpine', 'blob', '3f8a1b2c9d0e', '3.5', 'MiB', '4.1', 'ms']);
    assert.match(text, /client=10\.0\.0\.7/);
    assert.match(text, /12:34:56\.789\n$/);
    assert.ok(!text.includes('{'), 'no JSON in a request line');
  });

  it('colours the status on a terminal: green for HIT, yellow for MISS, red for DENIED', () => {
    assert.ok(prettyLine(request, true).startsWith('\u001b[32mHIT'));
    assert.ok(prettyLine({ ...request, cache: 'MISS' }, true).startsWith('\u001b[33mMISS'));
    const denied = prettyLine(
      { ...request, cache: 'DENIED', status: 401, kind: 'manifest-by-tag', repository: 'team/app', path: '/v2/team/app/manifests/v1' },
      true,
    );
    assert.ok(denied.startsWith('\u001b[31mDENIED'));
    assert.match(plain(denied), /^DENIED +docker\.io +team\/app:v1 +manifest .* GET 401/);
    assert.ok(!prettyLine(request, false).includes('\u001b'), 'no colour off a terminal');
  });

  it('writes other records as level, message, fields, and never more than one line', () => {
    const text = prettyLine(
      { level: 'warn', time: '2026-01-01T12:00:00.000Z', worker: 2, warning: 'Warning', detail: 'first line\nsecond line', msg: 'process warning' },
      false,
    );
    assert.match(text, /^WARN +process warning warning=Warning detail="first line\\nsecond line" 12:00:00\.000 w2\n$/);
  });

  it('flags a request line that carries an error', () => {
    const text = plain(prettyLine({ ...request, level: 'warn', cache: 'CORRUPT', error: 'digest mismatch' }, true));
    assert.match(text, /^CORRUPT .* WARN client=10\.0\.0\.7 error="digest mismatch"/);
  });
});
