// Configuration parsing: defaults, the rpardini variable names, and errors that name the variable.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, describeConfig, loadConfig } from '../src/config.js';

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({});
    assert.equal(c.port, 3128);
    assert.equal(c.caDir, path.resolve('certs'));
    assert.equal(c.cacheDir, path.resolve('data/cache'));
    assert.deepEqual(c.registries, ['registry-1.docker.io', 'auth.docker.io', 'registry.k8s.io', 'gcr.io', 'quay.io', 'ghcr.io']);
    assert.equal(c.allowPush, false);
    assert.equal(c.verifySsl, true);
    assert.equal(c.upstreamProxy, null);
  });

  it('keeps Docker Hub when REGISTRIES is replaced, and adds ADDITIONAL_REGISTRIES', () => {
    const c = loadConfig({ REGISTRIES: 'Quay.io, *.example.com:5000', ADDITIONAL_REGISTRIES: 'my.reg' });
    assert.deepEqual(c.registries, ['registry-1.docker.io', 'auth.docker.io', 'quay.io', '*.example.com:5000', 'my.reg']);
  });

  it('parses CONNECT_TO in curl syntax, IPv6 included, and lets the CLI override it', () => {
    const c = loadConfig({ CONNECT_TO: 'registry-1.docker.io:443:127.0.0.1:5000 ::[::1]:' });
    assert.deepEqual(c.connectTo, [
      { host: 'registry-1.docker.io', port: 443, toHost: '127.0.0.1', toPort: 5000 },
      { host: '', port: null, toHost: '::1', toPort: null },
    ]);
    assert.deepEqual(loadConfig({ CONNECT_TO: 'a:1:b:2' }, { connectTo: ['x:2:y:3'] }).connectTo, [{ host: 'x', port: 2, toHost: 'y', toPort: 3 }]);
  });

  it('turns UPSTREAM_PROXY credentials into a header and never shows the password', () => {
    const c = loadConfig({ UPSTREAM_PROXY: 'http://bob:p%40ss@proxy.corp:8080' });
    assert.equal(c.upstreamProxy?.authorization, 'Basic ' + Buffer.from('bob:p@ss').toString('base64'));
    assert.equal(c.upstreamProxy?.port, 8080);
    const shown = JSON.stringify(describeConfig(c));
    assert.doesNotMatch(shown, /p%40ss|p@ss|Ym9iOnBAc3M/);
    assert.match(shown, /bob:\*\*\*@proxy\.corp:8080/);
  });

  for (const [variable, value, mention] of [
    ['PORT', '70000', /PORT="70000".*e\.g\. PORT=3128/],
    ['ALLOW_PUSH', 'maybe', /ALLOW_PUSH="maybe"/],
    ['REGISTRIES', 'bad_host!', /REGISTRIES="bad_host!"/],
    ['CONNECT_TO', 'a:b:c', /CONNECT_TO="a:b:c"/],
    ['UPSTREAM_PROXY', 'https://u:secret@p:1', /UPSTREAM_PROXY=.*http:\/\//],
    ['LOG_LEVEL', 'loud', /LOG_LEVEL="loud"/],
  ] as const) {
    it(`rejects ${variable}=${value} naming the variable`, () => {
      assert.throws(() => loadConfig({ [variable]: value }), (err: Error) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, mention);
        assert.doesNotMatch(err.message, /secret/);
        return true;
      });
    });
  }
});
