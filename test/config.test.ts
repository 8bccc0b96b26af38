// tier: unit
// Configuration parsing: defaults, the rpardini variable names, errors that name the variable; the settings
// table itself (every default and example valid, secrets never shown), the startup description and summary,
// and the rpardini variables regcache does not read.
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, describeConfig, loadConfig, summarizeConfig, type Env } from '../src/config/config.js';
import { RPARDINI_VARIABLES, retiredVariablesIn } from '../src/config/rpardini-variables.js';
import { SETTINGS, SETTING_NAMES, defaultWorkers, variableNames, type Setting } from '../src/config/settings.js';

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({});
    assert.equal(c.port, 3128);
    assert.equal(c.caDir, path.resolve('certs'));
    assert.equal(c.cacheDir, path.resolve('data/cache'));
    assert.deepEqual(c.registries, ['registry-1.docker.io', 'auth.docker.io', 'registry.k8s.io', 'gcr.io', 'quay.io', 'ghcr.io']);
    assert.equal(c.allowPush, false);
    assert.equal(c.verifySsl, true);
    assert.equal(c.verifyOnRead, 'once');
    assert.equal(loadConfig({ VERIFY_ON_READ: 'always' }).verifyOnRead, 'always');
    // The booleans it took before it had modes keep their meaning.
    assert.equal(loadConfig({ VERIFY_ON_READ: 'true' }).verifyOnRead, 'always');
    assert.equal(loadConfig({ VERIFY_ON_READ: 'false' }).verifyOnRead, 'off');
    assert.equal(loadConfig({ VERIFY_ON_READ: 'OFF' }).verifyOnRead, 'off');
    assert.equal(c.scrubBytesPerSecond, 4 * 1024 * 1024);
    assert.equal(loadConfig({ SCRUB_RATE: '0' }).scrubBytesPerSecond, 0);
    assert.throws(() => loadConfig({ SCRUB_RATE: 'fast' }), /SCRUB_RATE="fast" is not valid/);
    assert.throws(() => loadConfig({ VERIFY_ON_READ: 'maybe' }), /VERIFY_ON_READ="maybe" is not valid/);
    assert.equal(c.upstreamProxy, null);
    assert.equal(c.clientHeadersTimeoutMs, 30_000);
    assert.equal(loadConfig({ CLIENT_HEADERS_TIMEOUT: '1500ms' }).clientHeadersTimeoutMs, 1500);
    assert.equal(c.workers, defaultWorkers(os.availableParallelism()));
  });

  it('defaults WORKERS to one process below 4 CPUs and to one per CPU from 4 on', () => {
    assert.deepEqual([1, 2, 3, 4, 16].map(defaultWorkers), [1, 1, 1, 4, 16]);
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
    assert.equal(describeConfig(c).CACHE_STORE, 's3://regcache/fleet/a/');
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
    assert.deepEqual([shown.PROXY_AUTH, shown.MIRROR_AUTH, shown.ADMIN_AUTH], ['(inline users)', 'none', '(inline users)']);
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

// A bad value of every variable `serve` reads stops it with this message, after "regcache: " (two of these
// run through the real command line: test/cli.test.ts).
const BAD_VALUES: [string, string][] = [
  ['PORT', 'http'],
  ['MIRROR_PORT', '99999'],
  ['ADMIN_PORT', '-1'],
  ['REGISTRIES', 'bad host!'],
  ['ADDITIONAL_REGISTRIES', 'a_b'],
  ['ALLOW_PUSH', 'sometimes'],
  ['VERIFY_SSL', 'nope'],
  ['SERVE_STALE', 'maybe'],
  ['ENABLE_MANIFEST_CACHE', 'yes please'],
  ['MANIFEST_CACHE_PRIMARY_REGEX', '(unclosed'],
  ['MANIFEST_CACHE_PRIMARY_TIME', 'ten days'],
  ['CACHE_MAX_SIZE', '32 gigs'],
  ['CACHE_INACTIVE', 'forever'],
  ['UPSTREAM_PROXY', 'socks5://proxy:1080'],
  ['UPSTREAM_CONNECT_TIMEOUT', 'soon'],
  ['UPSTREAM_HEADERS_TIMEOUT', '0'],
  ['UPSTREAM_IDLE_TIMEOUT', 'x'],
  ['CLIENT_HEADERS_TIMEOUT', 'slow'],
  ['CONNECT_TO', 'a:b'],
  ['AUTH_REGISTRIES', 'quay.io-only'],
  ['DISABLE_IPV6', 'perhaps'],
  ['LOG_LEVEL', 'loud'],
  ['MIRROR_HOSTNAME', 'not a host'],
  ['MIRROR_TLS_CERT', '/etc/cert.pem'],
];

describe('a bad value for every variable', () => {
  for (const [variable, value] of BAD_VALUES) {
    it(`stops on ${variable}=${JSON.stringify(value)} naming it and an example`, () => {
      assert.throws(
        () => loadConfig({ PORT: '0', MIRROR_PORT: '0', CA_DIR: '/nonexistent/certs', CACHE_DIR: '/nonexistent/cache', [variable]: value }),
        (err: Error) => {
          assert.ok(err instanceof ConfigError, String(err));
          const named = variable === 'MIRROR_TLS_CERT' ? 'MIRROR_TLS_KEY' : variable; // the missing half is the one named
          assert.match(err.message, new RegExp(`^${named}=`));
          assert.match(err.message, /e\.g\./);
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

const table = SETTINGS as Record<string, Setting<unknown>>;

// What a setting's example needs beside it to be valid (it is only valid with that one set).
const NEEDS: Record<string, Env> = {
  LOCAL_TIER_MAX_SIZE: { CACHE_STORE: 's3://regcache/cache' },
  S3_REDIRECT: { CACHE_STORE: 's3://regcache/cache' },
  MIRROR_TLS_CERT: { MIRROR_TLS_KEY: '/etc/regcache/mirror.key' },
  MIRROR_TLS_KEY: { MIRROR_TLS_CERT: '/etc/regcache/mirror.crt' },
};

describe('the settings table', () => {
  it('reads every default as its own text when nothing is set, and nothing as set', () => {
    const c = loadConfig({});
    for (const name of SETTING_NAMES) {
      const d = table[name]!.default;
      if (typeof d === 'string') assert.equal(c.settings.texts[name], d, name);
    }
    assert.equal(c.settings.texts.WORKERS, String(defaultWorkers(os.availableParallelism())), "WORKERS' computed default");
    assert.equal(c.settings.texts.CACHE_STORE, undefined);
    assert.deepEqual(c.settings.given, []);
  });

  for (const name of SETTING_NAMES) {
    it(`${name}: its example is valid and read as given`, () => {
      const s = table[name]!;
      const c = loadConfig({ ...NEEDS[name], [name]: s.example });
      assert.equal(c.settings.texts[name as keyof typeof c.settings.texts], s.example);
      assert.ok(c.settings.given.includes(name as (typeof c.settings.given)[number]));
      assert.notEqual(s.summary.trim(), '', 'a line for .env.example');
      assert.notEqual(s.description.trim(), '', "the README's description");
    });
  }

  it("names the variable and the table's example in a syntax error", () => {
    for (const [name, bad] of [
      ['CACHE_INACTIVE', 'forever'],
      ['LOCAL_TIER_MAX_SIZE', 'lots'],
      ['TUNNEL_PORTS', '70000'],
      ['MANIFEST_CACHE_PRIMARY_REGEX', '(unclosed'],
      ['ALLOWED_CLIENTS', 'everyone'],
    ] as const) {
      assert.throws(
        () => loadConfig({ CACHE_STORE: 's3://regcache', [name]: bad }),
        (err: Error) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.ok(err.message.startsWith(`${name}="${bad}" is not valid: expected `), err.message);
          const example = table[name]!.example;
          assert.ok(err.message.endsWith(`e.g. ${name}=${/^[\w@%+=:,./-]+$/.test(example) ? example : `"${example}"`}`), err.message);
          return true;
        },
      );
    }
  });

  it('reads a flag over its variable, and an alias when the variable is unset', () => {
    const c = loadConfig({ PORT: '1', LOG_LEVEL: 'warn', no_proxy: 'Internal.Corp' }, { port: '2', logLevel: 'debug', connectTo: ['a:1:b:2', 'c:3:d:4'] });
    assert.equal(c.port, 2);
    assert.equal(c.logLevel, 'debug');
    assert.equal(c.connectTo.length, 2);
    assert.deepEqual(c.noProxy, ['internal.corp']);
    assert.deepEqual(loadConfig({ NO_PROXY: 'a.corp', no_proxy: 'b.corp' }).noProxy, ['a.corp']);
    assert.deepEqual(c.settings.given, ['PORT', 'NO_PROXY', 'CONNECT_TO', 'LOG_LEVEL'], 'in table order');
  });

  it('keeps a delimiter as given, spaces included', () => {
    const c = loadConfig({ AUTH_REGISTRIES: 'quay.io : me : p w', AUTH_REGISTRIES_DELIMITER: ';', AUTH_REGISTRY_DELIMITER: ' : ' });
    assert.deepEqual(c.authRegistries, [{ host: 'quay.io', user: 'me', password: 'p w' }]);
  });

  it('lists every variable regcache reads, aliases included', () => {
    const names = variableNames();
    assert.equal(new Set(names).size, names.length, 'each named once');
    for (const name of ['PORT', 'CACHE_STORE', 'AUTH_REGISTRIES_DELIMITER', 'NO_PROXY', 'no_proxy', 'WORKERS']) assert.ok(names.includes(name), name);
  });
});

describe('the startup description', () => {
  // A secret of each secret setting, and what must never appear of it.
  const SECRETS: [string, string, RegExp][] = [
    ['PROXY_AUTH', 'alice:pr0xy-pw', /pr0xy-pw/],
    ['MIRROR_AUTH', 'bob:m1rror-pw', /m1rror-pw/],
    ['ADMIN_AUTH', 'root:adm1n-pw', /adm1n-pw/],
    ['AUTH_REGISTRIES', 'quay.io:robot:upstr3am-pw', /upstr3am-pw/],
    ['UPSTREAM_PROXY', 'http://carol:c0rp-pw@proxy.corp:3128', /c0rp-pw/],
    ['CA_KEY_PASSPHRASE', 'ca-k3y-pass phrase', /k3y-pass/],
  ];

  it('marks exactly the settings that hold secrets', () => {
    assert.deepEqual(SETTING_NAMES.filter((name) => table[name]!.secret !== undefined).sort(), SECRETS.map(([name]) => name).sort());
  });

  it('shows every setting in effect by its variable, defaults included, and no secret', () => {
    const env = Object.fromEntries(SECRETS.map(([name, value]) => [name, value]));
    const c = loadConfig({ ...env, CACHE_MAX_SIZE: '500m' });
    const shown = describeConfig(c);
    assert.equal(shown.CACHE_MAX_SIZE, '500m');
    assert.equal(shown.CACHE_INACTIVE, '60d');
    assert.equal(shown.CACHE_STORE, undefined, 'unset: not shown');
    assert.deepEqual(Object.keys(shown), Object.keys(c.settings.texts));
    const text = JSON.stringify(shown);
    for (const [name, , secret] of SECRETS) assert.doesNotMatch(text, secret, name);
    assert.equal(shown.PROXY_AUTH, '(inline users)');
    assert.deepEqual(shown.AUTH_REGISTRIES, ['quay.io (robot)']);
    assert.equal(shown.UPSTREAM_PROXY, 'http://carol:***@proxy.corp:3128');
    assert.equal(describeConfig(loadConfig({ PROXY_AUTH: '/etc/htpasswd' })).PROXY_AUTH, '/etc/htpasswd', 'a file is no secret');
  });

  it('summarizes where content is kept, what is intercepted and which variables were set, in a few hundred bytes', () => {
    const c = loadConfig({ PROXY_AUTH: 'alice:pr0xy-pw', REGISTRIES: 'quay.io', CACHE_DIR: '/var/cache/regcache' });
    const summary = summarizeConfig(c);
    assert.deepEqual(summary, {
      store: '/var/cache/regcache',
      registries: ['registry-1.docker.io', 'auth.docker.io', 'quay.io'],
      settings: ['CACHE_DIR', 'REGISTRIES', 'PROXY_AUTH'],
    });
    assert.equal(summarizeConfig(loadConfig({ CACHE_STORE: 's3://regcache/fleet' })).store, 's3://regcache/fleet/');
    assert.ok(JSON.stringify(summarizeConfig(loadConfig({}))).length < 300);
    assert.ok(JSON.stringify(describeConfig(loadConfig({}))).length > 1000, 'the whole configuration is what debug is for');
  });
});

describe("rpardini's variables", () => {
  // rpardini/docker-registry-proxy's variables: its Dockerfile's ENV, entrypoint.sh, create_ca_cert.sh, README.
  const RPARDINI = [
    'REGISTRIES',
    'AUTH_REGISTRIES',
    'AUTH_REGISTRIES_DELIMITER',
    'AUTH_REGISTRY_DELIMITER',
    'VERIFY_SSL',
    'DEBUG',
    'DEBUG_HUB',
    'DEBUG_NGINX',
    'DEBUG_CA_CERT',
    'CACHE_MAX_SIZE',
    'ENABLE_MANIFEST_CACHE',
    'MANIFEST_CACHE_PRIMARY_REGEX',
    'MANIFEST_CACHE_PRIMARY_TIME',
    'MANIFEST_CACHE_SECONDARY_REGEX',
    'MANIFEST_CACHE_SECONDARY_TIME',
    'MANIFEST_CACHE_DEFAULT_TIME',
    'ALLOW_OWN_AUTH',
    'ALLOW_PUSH',
    'ALLOW_PUSH_WITH_OWN_AUTH',
    'PROXY_REQUEST_BUFFERING',
    'SEND_TIMEOUT',
    'CLIENT_BODY_TIMEOUT',
    'CLIENT_HEADER_TIMEOUT',
    'KEEPALIVE_TIMEOUT',
    'PROXY_READ_TIMEOUT',
    'PROXY_CONNECT_TIMEOUT',
    'PROXY_SEND_TIMEOUT',
    'PROXY_CONNECT_READ_TIMEOUT',
    'PROXY_CONNECT_CONNECT_TIMEOUT',
    'PROXY_CONNECT_SEND_TIMEOUT',
    'DISABLE_IPV6',
    'CA_KEY_FILE',
    'CA_CRT_FILE',
    'CA_SRL_FILE',
  ];
  const known = new Set(variableNames());

  it('are each either read by regcache or warned about, naming what replaces them', () => {
    const listed = RPARDINI_VARIABLES.flatMap((g) => g.names);
    assert.deepEqual([...listed].sort(), [...RPARDINI].sort(), 'the list is the whole of rpardini, each once');
    for (const group of RPARDINI_VARIABLES) {
      assert.ok((group.same === undefined) !== (group.instead === undefined), `${group.names.join(', ')}: read, or replaced`);
      for (const name of group.names) assert.equal(known.has(name), group.same !== undefined, `${name} is ${group.same ? '' : 'not '}read by regcache`);
    }
  });

  it('that regcache does not read are found in the environment, one each, an empty one ignored', () => {
    const retired = RPARDINI.filter((name) => !known.has(name));
    const env = { ...Object.fromEntries(retired.map((name) => [name, 'true'])), KEEPALIVE_TIMEOUT: ' ', REGISTRIES: 'quay.io' };
    const found = retiredVariablesIn(env);
    assert.deepEqual(found.map((r) => r.name).sort(), retired.filter((n) => n !== 'KEEPALIVE_TIMEOUT').sort());
    assert.deepEqual(loadConfig(env).retired, found);
    assert.match(found.find((r) => r.name === 'PROXY_READ_TIMEOUT')!.instead, /UPSTREAM_HEADERS_TIMEOUT.*UPSTREAM_IDLE_TIMEOUT/);
    assert.match(found.find((r) => r.name === 'CLIENT_HEADER_TIMEOUT')!.instead, /CLIENT_HEADERS_TIMEOUT/);
    assert.match(found.find((r) => r.name === 'DEBUG')!.instead, /LOG_LEVEL=debug/);
    assert.deepEqual(retiredVariablesIn({}), []);
  });
});
