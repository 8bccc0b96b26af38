// Configuration parsing: defaults, the rpardini variable names, and errors that name the variable.
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, describeConfig, loadConfig } from '../src/config/config.js';

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({});
    assert.equal(c.port, 3128);
    assert.equal(c.caDir, path.resolve('certs'));
    assert.equal(c.cacheDir, path.resolve('data/cache'));
    assert.deepEqual(c.registries, ['registry-1.docker.io', 'auth.docker.io', 'registry.k8s.io', 'gcr.io', 'quay.io', 'ghcr.io']);
    assert.equal(c.allowPush, false);
    assert.equal(c.verifySsl, true);
    assert.equal(c.verifyOnRead, true);
    assert.equal(loadConfig({ VERIFY_ON_READ: 'false' }).verifyOnRead, false);
    assert.throws(() => loadConfig({ VERIFY_ON_READ: 'maybe' }), /VERIFY_ON_READ="maybe" is not valid/);
    assert.equal(c.upstreamProxy, null);
    assert.equal(c.clientHeadersTimeoutMs, 30_000);
    assert.equal(loadConfig({ CLIENT_HEADERS_TIMEOUT: '1500ms' }).clientHeadersTimeoutMs, 1500);
    assert.equal(c.workers, os.availableParallelism());
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

  it('reads CACHE_STORE as a bucket and a prefix, one process per replica, and no S3 credentials anywhere', () => {
    assert.equal(loadConfig({}).cacheStore, null);
    const c = loadConfig({ CACHE_STORE: 's3://regcache/fleet/a/', S3_ENDPOINT: 'http://127.0.0.1:7480/', S3_FORCE_PATH_STYLE: 'true', S3_FILL_LEASE: '10s' });
    assert.deepEqual(c.cacheStore, { bucket: 'regcache', prefix: 'fleet/a/', display: 's3://regcache/fleet/a/' });
    assert.deepEqual(c.s3, {
      endpoint: 'http://127.0.0.1:7480',
      forcePathStyle: true,
      fillLeaseMs: 10_000,
      sweepMs: 60_000,
      accessFlushMs: 30_000,
      evictGraceMs: 600_000,
      redirect: false,
      redirectTtlMs: 300_000,
    });
    assert.equal(c.workers, 1, 'WORKERS defaults to 1 with CACHE_STORE');
    assert.deepEqual(loadConfig({ CACHE_STORE: 's3://regcache' }).cacheStore, { bucket: 'regcache', prefix: '', display: 's3://regcache/' });
    assert.equal(describeConfig(c).cacheStore, 's3://regcache/fleet/a/');
    assert.throws(() => loadConfig({ CACHE_STORE: 's3://regcache', WORKERS: '4' }), /WORKERS="4".*with CACHE_STORE/);
    assert.equal(loadConfig({ CACHE_STORE: 's3://regcache' }).localTierMaxSize, 0, 'the local tier is off by default');
    assert.equal(loadConfig({ CACHE_STORE: 's3://regcache', LOCAL_TIER_MAX_SIZE: '0' }).localTierMaxSize, 0);
    assert.equal(loadConfig({ CACHE_STORE: 's3://regcache', LOCAL_TIER_MAX_SIZE: '20g' }).localTierMaxSize, 20 * 1024 ** 3);
    assert.throws(() => loadConfig({ LOCAL_TIER_MAX_SIZE: '20g' }), /LOCAL_TIER_MAX_SIZE="20g".*without CACHE_STORE/);
    assert.throws(() => loadConfig({ CACHE_STORE: 's3://regcache', LOCAL_TIER_MAX_SIZE: 'lots' }), /LOCAL_TIER_MAX_SIZE="lots"/);
  });

  it('reads MIRROR_AUTH and ADMIN_AUTH as users, "none" (any case), or unset; shows no inline password', () => {
    assert.deepEqual([loadConfig({}).mirrorAuth, loadConfig({}).adminAuth], [null, null]);
    const c = loadConfig({ PROXY_AUTH: 'ops:s3cret', MIRROR_AUTH: 'None', ADMIN_AUTH: 'root:t0p' });
    assert.deepEqual([c.mirrorAuth, c.adminAuth], ['none', 'root:t0p']);
    const shown = describeConfig(c);
    assert.deepEqual([shown.proxyAuth, shown.mirrorAuth, shown.adminAuth], ['(inline users)', 'none', '(inline users)']);
    assert.doesNotMatch(JSON.stringify(shown), /s3cret|t0p/);
  });

  for (const [variable, value, mention] of [
    ['PORT', '70000', /PORT="70000".*e\.g\. PORT=3128/],
    ['ALLOW_PUSH', 'maybe', /ALLOW_PUSH="maybe"/],
    ['REGISTRIES', 'bad_host!', /REGISTRIES="bad_host!"/],
    ['CONNECT_TO', 'a:b:c', /CONNECT_TO="a:b:c"/],
    ['UPSTREAM_PROXY', 'https://u:secret@p:1', /UPSTREAM_PROXY=.*http:\/\//],
    ['LOG_LEVEL', 'loud', /LOG_LEVEL="loud"/],
    ['WORKERS', '0', /WORKERS="0".*e\.g\. WORKERS=4/],
    ['WORKERS', 'many', /WORKERS="many"/],
    ['WORKERS', '257', /WORKERS="257"/],
    ['CACHE_STORE', 'minio://bucket', /CACHE_STORE="minio:\/\/bucket".*e\.g\. CACHE_STORE=s3:\/\//],
    ['CACHE_STORE', 's3://Bad_Bucket', /CACHE_STORE="s3:\/\/Bad_Bucket"/],
    ['S3_ENDPOINT', 'http://key:secret@minio:9000', /S3_ENDPOINT=.*without credentials/],
    ['S3_FILL_LEASE', 'soon', /S3_FILL_LEASE="soon"/],
  ] as const) {
    it(`rejects ${variable}=${value} naming the variable`, () => {
      assert.throws(
        () => loadConfig({ [variable]: value }),
        (err: Error) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, mention);
          assert.doesNotMatch(err.message, /secret/);
          return true;
        },
      );
    });
  }
});

describe('a good value for every variable', () => {
  it('is read as documented', () => {
    const c = loadConfig({
      PORT: '8080',
      MIRROR_PORT: '0',
      ADMIN_PORT: '9090',
      REGISTRY_DOMAIN: 'Mirror.Example.com',
      MIRROR_AUTH: 'u:p',
      MIRROR_TLS_CERT: 'm.crt',
      MIRROR_TLS_KEY: 'm.key',
      MIRROR_HOSTNAME: 'Regcache.Internal',
      CA_DIR: '/ca',
      CACHE_DIR: '/docker_mirror_cache',
      CACHE_MAX_SIZE: '500m',
      CACHE_INACTIVE: '12h',
      REGISTRIES: 'quay.io',
      ADDITIONAL_REGISTRIES: 'reg.local:5000',
      ALLOW_PUSH: 'true',
      SERVE_STALE: 'false',
      ENABLE_MANIFEST_CACHE: 'true',
      MANIFEST_CACHE_PRIMARY_REGEX: '^prod$',
      MANIFEST_CACHE_PRIMARY_TIME: '1d',
      MANIFEST_CACHE_SECONDARY_REGEX: '^v',
      MANIFEST_CACHE_SECONDARY_TIME: '2d',
      MANIFEST_CACHE_DEFAULT_TIME: '30m',
      PROXY_AUTH: '/etc/htpasswd',
      ADMIN_AUTH: '/etc/admin-htpasswd',
      VERIFY_SSL: 'false',
      AUTH_REGISTRIES: 'quay.io:u:p',
      UPSTREAM_CONNECT_TIMEOUT: '5s',
      UPSTREAM_HEADERS_TIMEOUT: '2m',
      UPSTREAM_IDLE_TIMEOUT: '90s',
      UPSTREAM_CA_FILE: 'extra.pem',
      UPSTREAM_PROXY: 'http://proxy.corp:3128',
      NO_PROXY: 'Internal.Corp,10.0.0.1',
      CONNECT_TO: 'quay.io:443:10.0.0.9:8443',
      DISABLE_IPV6: 'yes',
      LOG_LEVEL: 'warn',
      WORKERS: '16',
    });
    assert.equal(c.port, 8080);
    assert.equal(c.mirrorPort, 0);
    assert.equal(c.adminPort, 9090);
    assert.equal(c.registryDomain, 'mirror.example.com');
    assert.equal(c.mirrorAuth, 'u:p');
    assert.deepEqual(c.mirrorTls, { certFile: path.resolve('m.crt'), keyFile: path.resolve('m.key') });
    assert.equal(c.mirrorHostname, 'regcache.internal');
    assert.equal(c.caDir, '/ca');
    assert.equal(c.cacheDir, '/docker_mirror_cache');
    assert.equal(c.cacheMaxSize, 500 * 1024 ** 2);
    assert.equal(c.cacheInactiveMs, 12 * 3_600_000);
    assert.deepEqual(c.registries, ['registry-1.docker.io', 'auth.docker.io', 'quay.io', 'reg.local:5000']);
    assert.equal(c.allowPush, true);
    assert.equal(c.serveStale, false);
    assert.deepEqual(
      c.manifestCache?.map((t) => [t.pattern.source, t.ttlMs]),
      [
        ['^prod$', 86_400_000],
        ['^v', 2 * 86_400_000],
        ['.*', 30 * 60_000],
      ],
    );
    assert.equal(c.proxyAuth, '/etc/htpasswd');
    assert.equal(c.adminAuth, '/etc/admin-htpasswd');
    assert.equal(c.verifySsl, false);
    assert.deepEqual(c.authRegistries, [{ host: 'quay.io', user: 'u', password: 'p' }]);
    assert.deepEqual(c.timeouts, { connectMs: 5000, headersMs: 120_000, idleMs: 90_000 });
    assert.equal(c.upstreamCaFile, path.resolve('extra.pem'));
    assert.equal(c.upstreamProxy?.host, 'proxy.corp');
    assert.deepEqual(c.noProxy, ['internal.corp', '10.0.0.1']);
    assert.deepEqual(c.connectTo, [{ host: 'quay.io', port: 443, toHost: '10.0.0.9', toPort: 8443 }]);
    assert.equal(c.disableIpv6, true);
    assert.equal(c.logLevel, 'warn');
    assert.equal(c.workers, 16);
  });
});
