import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Image } from './images.js';
import { run, type RunResult } from './proc.js';

export interface SkopeoOptions {
  /** Scratch dir for policy.json, HOME and skopeo's temp files. */
  dir: string;
  /** Extra env (HTTPS_PROXY, SSL_CERT_FILE, ...) on top of a minimal base. */
  env?: Record<string, string>;
  timeoutMs?: number;
  /** Run skopeo under this command, e.g. ['ip', 'netns', 'exec', 'ns1'] for a network namespace. */
  prefix?: string[];
}

/**
 * Run skopeo hermetically: our own permissive policy, HOME and runtime dir in
 * `dir` (so no host auth.json or registries.conf.d drop-ins leak in).
 */
export async function runSkopeo(args: string[], opts: SkopeoOptions): Promise<RunResult> {
  const home = path.join(opts.dir, 'home');
  const tmp = path.join(opts.dir, 'tmp');
  await mkdir(home, { recursive: true });
  await mkdir(tmp, { recursive: true });
  const policy = path.join(opts.dir, 'policy.json');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: home,
    XDG_RUNTIME_DIR: home,
    TMPDIR: tmp,
    ...opts.env,
  };
  const [command = 'skopeo', ...rest] = [...(opts.prefix ?? []), 'skopeo'];
  return run(command, [...rest, '--policy', policy, ...args], { env, timeoutMs: opts.timeoutMs ?? 120_000 });
}

/** `skopeo copy` from a registry to a dir: layout (one file per blob, named by hex digest). */
export async function skopeoCopyToDir(srcRef: string, outDir: string, opts: SkopeoOptions & { certDir?: string; creds?: string }): Promise<RunResult> {
  const args = ['copy'];
  if (opts.certDir !== undefined) args.push('--src-cert-dir', opts.certDir);
  if (opts.creds !== undefined) args.push('--src-creds', opts.creds);
  args.push(`docker://${srcRef}`, `dir:${outDir}`);
  return runSkopeo(args, opts);
}

/** skopeo's dir: layout holds manifest.json and each blob as <hex>: all must be the pushed bytes. */
export async function assertSkopeoDir(outDir: string, image: Image): Promise<void> {
  assert.deepEqual(await readFile(path.join(outDir, 'manifest.json')), image.manifest);
  for (const blob of [image.config, ...image.layers]) {
    const pulled = await readFile(path.join(outDir, blob.digest.slice('sha256:'.length)));
    assert.equal(`sha256:${createHash('sha256').update(pulled).digest('hex')}`, blob.digest);
    assert.ok(pulled.equals(await readFile(blob.file)), `${blob.digest} differs from what was pushed`);
  }
}
