// `regcache cache ls|du|rm|prune|verify`: sent to the running server over its control socket, or run
// here on the store when no server holds the cache directory (holding the socket meanwhile, so that a
// server cannot start halfway through).
import fs from 'node:fs';
import { Option, type Command } from 'commander';
import { askControl, listenControl, type ControlRequest } from '../admin/control-socket.js';
import type { ListedEntry, ListedImage, RemovalReport, Usage, VerifyReport } from '../cache/cache-admin.js';
import { ConfigError, loadConfig, parseDuration, parseSize } from '../config/config.js';
import { fail } from './exit.js';
import { formatBytes } from '../telemetry/format-bytes.js';
import { ImageReferenceError, isDigestArgument, parseImageReference } from '../reference/image-reference.js';
import { registryDisplayName } from '../reference/registry-name.js';
import { errorMessage } from '../telemetry/error-message.js';

interface CommonOptions {
  cacheDir?: string;
  json?: boolean;
}

export function addCacheCommands(program: Command): void {
  const cache = program
    .command('cache')
    .description('Inspect and manage the cache (also while the server runs).')
    .addHelpText(
      'after',
      examples(
        'regcache cache ls --images',
        'regcache cache du',
        'regcache cache rm --dry-run alpine:3.20',
        'regcache cache prune --older-than 30d',
        'regcache cache verify',
      ),
    );
  const command = (name: string, description: string) =>
    cache
      .command(name)
      .description(description)
      .option('--cache-dir <dir>', 'the content store (CACHE_DIR, default ./data/cache)')
      .option('--json', 'machine-readable output');
  const dryRun = new Option('--dry-run', 'list what would be removed; remove nothing');

  command('ls', 'stored entries, most recently used first: repositories, tags, digests, sizes, last use; or stored images (--images)')
    .option('--registry <host>', 'only entries requested from this registry (docker.io, index.docker.io and registry-1.docker.io are one)')
    .option('--images', 'one row per stored image (tag, or repository@digest): its size and whether every config and layer is stored')
    .addHelpText(
      'after',
      examples(
        'regcache cache ls',
        'regcache cache ls --registry docker.io',
        'regcache cache ls --images',
        'regcache cache ls --images --registry ghcr.io --json',
      ),
    )
    .action((o: CommonOptions & { registry?: string; images?: boolean }) => {
      const args = { ...(o.registry ? { registry: o.registry } : {}), ...(o.images ? { images: true } : {}) };
      return o.images
        ? execute(o, { cmd: 'ls', args }, (rows: ListedImage[]) => printImages(rows, o.registry))
        : execute(o, { cmd: 'ls', args }, (rows: ListedEntry[]) => printList(rows, o.registry));
    });
  command('du', 'total size, per registry, against CACHE_MAX_SIZE')
    .addHelpText('after', examples('regcache cache du', 'CACHE_DIR=/docker_mirror_cache regcache cache du --json'))
    .action((o: CommonOptions) => execute(o, { cmd: 'du', args: {} }, printUsage));
  command('rm', 'remove an image (its tag, and its manifests and blobs that no other stored image or repository uses) or a digest')
    .argument('<image-ref|digest>', 'e.g. alpine:3.20, ghcr.io/org/app:v1, sha256:...')
    .addOption(dryRun)
    .addHelpText(
      'after',
      examples(
        'regcache cache rm alpine:3.20',
        'regcache cache rm --dry-run alpine:3.20',
        'regcache cache rm ghcr.io/org/app@sha256:<digest>',
        'regcache cache rm sha256:<digest>',
      ),
    )
    .action((target: string, o: CommonOptions & { dryRun?: boolean }) => {
      parse(() => isDigestArgument(target) || parseImageReference(target)); // a malformed one is a usage error (exit 2)
      return execute(o, { cmd: 'rm', args: { target, dryRun: o.dryRun === true } }, printRemoval);
    });
  command('prune', 'remove entries unused for a while, and/or least recently used ones down to a size')
    .option('--older-than <duration>', 'e.g. 7d, 12h (nginx time syntax)')
    .option('--to-size <size>', 'e.g. 10g, 500m (nginx size syntax)')
    .addOption(dryRun)
    .addHelpText(
      'after',
      examples('regcache cache prune --older-than 7d', 'regcache cache prune --to-size 10g', 'regcache cache prune --dry-run --older-than 30d'),
    )
    .action((o: CommonOptions & { olderThan?: string; toSize?: string; dryRun?: boolean }) => {
      if (o.olderThan === undefined && o.toSize === undefined) fail('prune needs --older-than and/or --to-size, e.g. regcache cache prune --older-than 7d');
      const args = {
        olderThanMs: o.olderThan === undefined ? null : parse(() => parseDuration('--older-than', o.olderThan!)),
        toBytes: o.toSize === undefined ? null : parse(() => parseSize('--to-size', o.toSize!)),
        dryRun: o.dryRun === true,
      };
      return execute(o, { cmd: 'prune', args }, printRemoval);
    });
  command('verify', 're-hash all content; remove corrupt entries and files no entry refers to (exit 1 if any entry was corrupt or missing)')
    .addHelpText('after', examples('regcache cache verify', 'regcache cache verify --json'))
    .action((o: CommonOptions) => execute(o, { cmd: 'verify', args: {} }, printVerify, verifyFailure));
}

function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}`;
}

/** Runs one command and prints its result; `failure` names a result that must still exit 1. */
async function execute<T>(
  options: CommonOptions,
  request: ControlRequest,
  print: (result: T) => string,
  failure?: (result: T) => string | null,
): Promise<void> {
  const config = parse(() => loadConfig(process.env, options.cacheDir ? { cacheDir: options.cacheDir } : {}));
  let result: unknown;
  const remote = await askControl(config.cacheDir, request);
  if (remote) {
    if (!remote.ok) fail(remote.error, 1);
    result = remote.result;
  } else {
    if (!fs.existsSync(config.cacheDir)) fail(`there is no cache at ${config.cacheDir} (set CACHE_DIR or --cache-dir)`, 1);
    const lock = await listenControl(config.cacheDir, () => Promise.reject(new Error('busy with a regcache cache command')));
    // The store's code is loaded only when no server answers: through a server, the command needs none of it.
    const [{ LocalStore }, { CacheAdmin }] = await Promise.all([import('../cache/local/local-store.js'), import('../cache/cache-admin.js')]);
    const store = await LocalStore.open(config.cacheDir);
    try {
      result = await new CacheAdmin(
        store,
        config.cacheMaxSize,
        store.lostAtOpen.map((e) => e.digest),
      ).run(request.cmd, request.args);
    } catch (err) {
      fail(errorMessage(err), 1);
    } finally {
      await store.close();
      await new Promise((resolve) => lock.close(resolve));
    }
  }
  process.stdout.write(options.json ? JSON.stringify(result, null, 2) + '\n' : print(result as T));
  const failed = failure?.(result as T);
  if (failed) fail(failed, 1);
}

function printList(rows: ListedEntry[], registry: string | undefined): string {
  const lines = rows.map((r) =>
    [
      r.lastAccess.slice(0, 19).replace('T', ' '),
      formatBytes(r.size).padStart(10),
      r.kind.padEnd(8),
      r.digest.slice(0, 19),
      [...r.tags, ...r.repositories.filter((repo) => !r.tags.some((t) => t.startsWith(repo + ':')))].join(' '),
    ].join('  '),
  );
  return ['LAST USED            SIZE        KIND      DIGEST               IMAGES', ...lines, ...nothingFrom(rows, registry)].join('\n') + '\n';
}

function printImages(rows: ListedImage[], registry: string | undefined): string {
  const lines = rows.map((r) => {
    const platforms = r.platforms ? `${r.platforms.stored.length}/${r.platforms.listed}` : '-';
    return [formatBytes(r.size).padStart(10), (r.complete ? 'yes' : 'no').padEnd(8), r.digest.slice(0, 19), platforms.padEnd(9), r.image].join('  ');
  });
  return (
    [
      '      SIZE  COMPLETE  DIGEST               PLATFORMS  IMAGE',
      ...lines,
      ...nothingFrom(rows, registry),
      '',
      "SIZE: the image's manifests, configs and layers that are stored, each once; content shared between images",
      'counts in each, so the sizes can add up to more than `regcache cache du`. COMPLETE: every config and layer',
      'of each stored platform is stored. PLATFORMS: of a multi-platform image, those stored / those it lists.',
    ].join('\n') + '\n'
  );
}

/** A filter that matched nothing says so rather than printing an empty table. */
function nothingFrom(rows: unknown[], registry: string | undefined): string[] {
  return rows.length === 0 && registry !== undefined
    ? [`(nothing stored from ${registryDisplayName(registry)}; regcache cache du lists the registries in the cache)`]
    : [];
}

function printUsage(u: Usage): string {
  const pct = ((100 * u.totalBytes) / u.maxBytes).toFixed(1);
  const lines = [`total  ${formatBytes(u.totalBytes)} in ${u.entries} entries, ${pct}% of CACHE_MAX_SIZE ${formatBytes(u.maxBytes)}`];
  for (const [registry, r] of Object.entries(u.registries).sort(([, a], [, b]) => b.bytes - a.bytes)) {
    lines.push(`  ${registry}  ${formatBytes(r.bytes)} in ${r.entries} entries`);
  }
  lines.push('(content is stored once; an entry requested from several registries counts once in each, so the registries can add up to more than the total)');
  return lines.join('\n') + '\n';
}

function printRemoval(r: RemovalReport): string {
  const lines = r.untagged.map((image) => `${r.dryRun ? 'would untag' : 'untagged'} ${image}`);
  lines.push(`${r.dryRun ? 'would remove' : 'removed'} ${r.removed} entries, ${formatBytes(r.bytes)}${r.entries.length > 0 ? ':' : ''}`);
  for (const e of r.entries) lines.push(`  ${e.kind.padEnd(8)}  ${e.digest}  ${formatBytes(e.size)}`);
  if (r.kept.length > 0) lines.push(`kept ${r.kept.length} entries that other images use:`);
  for (const e of r.kept) lines.push(`  ${e.kind.padEnd(8)}  ${e.digest}  ${formatBytes(e.size)}  used by ${e.usedBy.join(', ')}`);
  if (r.dryRun) lines.push('nothing was removed (--dry-run)');
  return lines.join('\n') + '\n';
}

function printVerify(r: VerifyReport): string {
  const lines = [
    `checked ${r.checked} entries: ${r.corrupt.length} corrupt, ${r.missing.length} missing, ${r.orphans} orphaned files removed, ${formatBytes(r.bytesFreed)} freed`,
  ];
  for (const d of r.corrupt) lines.push(`  corrupt (removed): ${d}`);
  for (const d of r.missing) lines.push(`  missing (entry dropped): ${d}`);
  return lines.join('\n') + '\n';
}

/** Scripts and monitoring must notice when the disk lost or changed bytes it had confirmed as written. */
function verifyFailure(r: VerifyReport): string | null {
  if (r.corrupt.length + r.missing.length === 0) return null;
  return `verify found ${r.corrupt.length} corrupt and ${r.missing.length} missing entries (dropped from the cache)`;
}

/** A bad value or argument is a usage error: exit 2 with its message. */
function parse<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof ConfigError || err instanceof ImageReferenceError) fail(err.message);
    throw err;
  }
}
