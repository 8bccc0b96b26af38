// tier: unit
// The pure decisions on the data path: CONNECT targets, the allowlist, request classification, Range,
// NO_PROXY and CONNECT_TO routing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Allowlist } from '../src/registry/allowlist.js';
import { parseRange } from '../src/registry/content-head.js';
import { REGISTRY_ERRORS } from '../src/registry/registry-errors.js';
import { classify } from '../src/registry/request-classifier.js';
import { parseConnectTarget } from '../src/doors/connect-target.js';
import { DestinationPolicy } from '../src/upstream/destination-policy.js';
import { Dialer, matchesNoProxy } from '../src/upstream/dialer.js';

const D = 'sha256:' + 'ab'.repeat(32);

describe('parseConnectTarget', () => {
  it('accepts host:port and [v6]:port', () => {
    assert.deepEqual(parseConnectTarget('Quay.IO:443'), { host: 'quay.io', port: 443 });
    assert.deepEqual(parseConnectTarget('[::1]:8443'), { host: '::1', port: 8443 });
  });
  it('rejects anything else', () => {
    for (const bad of [undefined, '', 'host', 'host:0', 'host:65536', ':443', '[zz::1]:443', 'a b:443', 'h/x:443', 'x'.repeat(400) + ':1']) {
      assert.equal(parseConnectTarget(bad), null, String(bad));
    }
  });
});

describe('Allowlist', () => {
  const list = new Allowlist(['registry-1.docker.io', 'my.reg:5000', '*.example.com']);
  it('matches exact hosts, ports and wildcards case-insensitively', () => {
    assert.ok(list.matches('Registry-1.Docker.IO', 443));
    assert.ok(list.matches('my.reg', 5000));
    assert.ok(!list.matches('my.reg', 443));
    assert.ok(list.matches('a.b.example.com', 443));
    assert.ok(!list.matches('example.com', 443), 'the wildcard covers subdomains only');
    assert.ok(!list.matches('evilexample.com', 443));
  });
  it('reads an entry without a port as port 443, not every port of the host', () => {
    assert.ok(!list.matches('registry-1.docker.io', 80));
    assert.ok(!list.matches('registry-1.docker.io', 8443));
    assert.ok(!list.matches('a.example.com', 5000));
  });
});

describe('classify', () => {
  it('recognises cacheable requests', () => {
    assert.deepEqual(classify('GET', `/v2/library/alpine/blobs/${D}`), { kind: 'blob', name: 'library/alpine', digest: D });
    assert.deepEqual(classify('HEAD', `/v2/a/b/c/manifests/${D}`), { kind: 'manifest-by-digest', name: 'a/b/c', digest: D });
    assert.deepEqual(classify('GET', '/v2/alpine/manifests/3.20?x=1'), { kind: 'manifest-by-tag', name: 'alpine', tag: '3.20' });
  });
  it('caches a referrers GET by sha256 digest with at most an artifactType filter; passes other referrers requests through', () => {
    const sig = 'application/vnd.dev.cosign.artifact.sig.v1+json';
    assert.deepEqual(classify('GET', `/v2/lib/app/referrers/${D}`), { kind: 'referrers', name: 'lib/app', digest: D, artifactType: null });
    assert.deepEqual(classify('GET', `/v2/lib/app/referrers/${D}?artifactType=${encodeURIComponent(sig)}`), {
      kind: 'referrers',
      name: 'lib/app',
      digest: D,
      artifactType: sig,
    });
    for (const target of [
      `/v2/lib/app/referrers/${D}?n=10&last=x`, // a page: not cached
      `/v2/lib/app/referrers/${D}?artifactType=a/b&artifactType=c/d`,
      `/v2/lib/app/referrers/${D}?artifactType=not-a-media-type`,
      `/v2/lib/app/referrers/${D}?artifactType=`,
      `/v2/lib/app/referrers/sha512:${'a'.repeat(128)}`,
    ]) {
      assert.deepEqual(classify('GET', target), { kind: 'passthrough', what: 'referrers' }, target);
    }
    assert.deepEqual(classify('HEAD', `/v2/lib/app/referrers/${D}`), { kind: 'passthrough', what: 'referrers' });
    assert.equal(classify('GET', '/v2/lib/app/referrers/sha256:abc').kind, 'invalid');
    assert.equal(classify('DELETE', `/v2/lib/app/referrers/${D}`).kind, 'write');
  });
  it('passes the rest through and gates writes', () => {
    assert.equal(classify('GET', '/v2/').kind, 'passthrough');
    assert.equal(classify('GET', '/token?scope=x').kind, 'passthrough');
    assert.equal(classify('GET', '/v2/alpine/tags/list').kind, 'passthrough');
    assert.equal(classify('GET', `/v2/alpine/blobs/sha512:${'a'.repeat(128)}`).kind, 'passthrough');
    assert.equal(classify('PUT', '/v2/alpine/manifests/1').kind, 'write');
    assert.equal(classify('DELETE', `/v2/alpine/blobs/${D}`).kind, 'write');
  });
  it('rejects path tricks and bad digests with 400', () => {
    for (const p of [
      '/v2/a/%2e%2e/b/blobs/' + D,
      '/v2/a/../b/blobs/' + D,
      '/v2/a%2Fb/blobs/' + D,
      '/v2/a\\b/blobs/' + D,
      '/v2/A/blobs/' + D,
      '/v2/a/blobs/sha256:xyz',
      '/v2/a/manifests/-bad',
    ]) {
      const r = classify('GET', p);
      assert.equal(r.kind, 'invalid', p);
      assert.equal(r.kind === 'invalid' && REGISTRY_ERRORS[r.error].status, 400, p);
    }
  });
});

describe('parseRange', () => {
  it('handles the forms clients send', () => {
    assert.deepEqual(parseRange(undefined, 10), { kind: 'none' });
    assert.deepEqual(parseRange('bytes=2-4', 10), { kind: 'range', start: 2, end: 4 });
    assert.deepEqual(parseRange('bytes=5-', 10), { kind: 'range', start: 5, end: 9 });
    assert.deepEqual(parseRange('bytes=-3', 10), { kind: 'range', start: 7, end: 9 });
    assert.deepEqual(parseRange('bytes=8-100', 10), { kind: 'range', start: 8, end: 9 });
    assert.deepEqual(parseRange('bytes=10-', 10), { kind: 'unsatisfiable' });
  });
});

describe('upstream routing', () => {
  it('matches NO_PROXY like curl', () => {
    assert.ok(matchesNoProxy(['example.com'], 'a.example.com', 443));
    assert.ok(matchesNoProxy(['.example.com'], 'example.com', 443));
    assert.ok(!matchesNoProxy(['example.com'], 'notexample.com', 443));
    assert.ok(matchesNoProxy(['reg:5000'], 'reg', 5000));
    assert.ok(!matchesNoProxy(['reg:5000'], 'reg', 443));
    assert.ok(matchesNoProxy(['*'], 'anything', 1));
  });
  it('routes by the first matching CONNECT_TO rule', () => {
    const dialer = new Dialer({
      connectTo: [
        { host: 'registry-1.docker.io', port: 443, toHost: '127.0.0.1', toPort: 5000 },
        { host: '', port: 443, toHost: '', toPort: 8443 },
      ],
      upstreamProxy: null,
      noProxy: [],
      connectTimeoutMs: 1000,
      policy: new DestinationPolicy({ allow: [], deny: [] }),
    });
    assert.deepEqual(dialer.route('Registry-1.docker.io', 443), { host: '127.0.0.1', port: 5000 });
    assert.deepEqual(dialer.route('quay.io', 443), { host: 'quay.io', port: 8443 });
    assert.deepEqual(dialer.route('quay.io', 80), { host: 'quay.io', port: 80 });
  });
});
