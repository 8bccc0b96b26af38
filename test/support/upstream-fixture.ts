// A real docker-registry standing in for a public registry, under a CA made by the test, with an image
// pushed into it, plus the helpers every end-to-end test needs to pull it through regcache.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeImage, pushImage, type Image } from '../harness/images.js';
import { createTestCA, type TestCA } from '../harness/pki.js';
import { startRegcache, type Regcache, type RegcacheOptions } from '../harness/regcache.js';
import { startRegistry, type Registry } from '../harness/registry.js';
import { assertSkopeoDir, skopeoCopyToDir } from '../harness/skopeo.js';
import { startTokenServer, type TokenServer, type TokenServerOptions } from '../harness/token-server.js';
import { waitFor, type RunResult } from '../harness/proc.js';

export interface Upstream {
  ca: TestCA;
  registry: Registry;
  image: Image;
  /** Every blob a pull of the image fetches: config and layers. */
  blobs: string[];
}

export async function startUpstream(
  dir: string,
  hostnames: string[],
  layerSeeds: string[],
  registryExtra: Partial<Parameters<typeof startRegistry>[0]> = {},
): Promise<Upstream> {
  await mkdir(dir, { recursive: true });
  const ca = await createTestCA(dir, 'upstream test CA');
  const tls = await ca.issue([...hostnames, '127.0.0.1'], dir, 'registry');
  const registry = await startRegistry({ dir: path.join(dir, 'registry'), tls, caFile: ca.certFile, ...registryExtra });
  const image = await makeImage(path.join(dir, 'image'), {
    layers: layerSeeds.map((seed, i) => ({ size: 400_000 + i * 150_000, seed })),
  });
  return { ca, registry, image, blobs: [image.config.digest, ...image.layers.map((l) => l.digest)] };
}

export interface TokenAuthUpstream {
  upstream: Upstream;
  tokens: TokenServer; // the realm, at https://auth.test/token (route auth.test to tokens.port)
  tokenCa: TestCA; // signed the token server's certificate
  caBundle: string; // PEM file with both CAs: UPSTREAM_CA_FILE for regcache
  seedToken(repo: string): string; // pull+push rights, for pushing test images
}

/** A Docker-Hub-shaped upstream: the registry with `auth: token`, its realm a test token server at auth.test. */
export async function startTokenAuthUpstream(
  root: string,
  hostnames: string[],
  layerSeeds: string[],
  tokenOptions: Pick<TokenServerOptions, 'users' | 'privateRepos'> = {},
  registryExtra: Partial<Parameters<typeof startRegistry>[0]> = {},
): Promise<TokenAuthUpstream> {
  const tokenCa = await createTestCA(path.join(root, 'token-ca'), 'token CA');
  const tokens = await startTokenServer({ dir: path.join(root, 'token'), ca: tokenCa, hostnames: ['auth.test'], ...tokenOptions });
  const upstream = await startUpstream(path.join(root, 'upstream'), hostnames, layerSeeds, {
    auth: { realm: 'https://auth.test/token', service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.rootCertBundleFile },
    ...registryExtra,
  });
  const caBundle = path.join(root, 'upstream-cas.pem');
  await writeFile(caBundle, upstream.ca.certPem + tokenCa.certPem);
  const seedToken = (repo: string) => tokens.mintToken([{ type: 'repository', name: repo, actions: ['pull', 'push'] }], 'seeder');
  return { upstream, tokens, tokenCa, caBundle, seedToken };
}

export async function pushTo(upstream: Upstream, repo: string, tag: string, token?: string): Promise<void> {
  await pushImage(upstream.registry.url, repo, tag, upstream.image, { caFile: upstream.ca.certFile, ...(token ? { token } : {}) });
}

/** regcache in front of the upstream: allowlisted names routed to the local registry by CONNECT_TO. */
export async function startProxyFor(upstream: Upstream, opts: RegcacheOptions & { routes: Record<string, number> }): Promise<Regcache> {
  const connectTo = Object.entries(opts.routes).map(([host, port]) => `${host}:443:127.0.0.1:${port}`);
  return startRegcache({
    ...opts,
    env: { UPSTREAM_CA_FILE: upstream.ca.certFile, CONNECT_TO: connectTo.join(' '), ...opts.env },
  });
}

/** A cert dir for skopeo that trusts regcache's CA (only *.crt: a *.key would be taken as a client key). */
export async function certDirFor(proxy: Regcache, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await copyFile(proxy.caFile, path.join(dir, 'ca.crt'));
  return dir;
}

export async function pullThrough(
  proxy: Pick<Regcache, 'proxyUrl'>,
  ref: string,
  out: string,
  certDir: string,
  scratch: string,
  creds?: string,
): Promise<RunResult> {
  return skopeoCopyToDir(ref, out, {
    dir: scratch,
    certDir,
    env: { HTTPS_PROXY: proxy.proxyUrl, NO_PROXY: '' },
    ...(creds ? { creds } : {}),
  });
}

/**
 * One skopeo pull of `ref` per proxy, all at once (into ROOT/pull-<i>): every client gets the image, every
 * copy byte-identical, and the registry saw one GET per blob (config and layers, returned).
 */
export async function assertConcurrentPullsFetchOnce(
  registry: Registry,
  image: Image,
  proxies: Pick<Regcache, 'proxyUrl'>[],
  ref: string,
  root: string,
  certDir: string,
): Promise<string[]> {
  const outs = proxies.map((_, i) => path.join(root, `pull-${i}`));
  const results = await Promise.all(proxies.map((proxy, i) => pullThrough(proxy, ref, outs[i]!, certDir, path.join(root, `skopeo-${i}`))));
  results.forEach((r, i) => assert.equal(r.code, 0, `client ${i}: ${r.stderr}`));
  for (const out of outs) await assertSkopeoDir(out, image);
  for (const name of await readdir(outs[0]!)) {
    const first = await readFile(path.join(outs[0]!, name));
    for (const out of outs.slice(1)) assert.ok(first.equals(await readFile(path.join(out, name))), `${name} in ${out}`);
  }
  const blobs = [image.config.digest, ...image.layers.map((l) => l.digest)];
  await waitFor(async () => (await registry.countBlobGets(blobs[0]!)) >= 1, { timeoutMs: 5000, what: "the registry's access log" });
  for (const digest of blobs) assert.equal(await registry.countBlobGets(digest), 1, `one upstream GET of ${digest}`);
  return blobs;
}
