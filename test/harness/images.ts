import { createCipheriv, createHash, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';

export const MediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

export type ImageFormat = 'docker' | 'oci';

/** A content-addressed file on disk. */
export interface BlobFile {
  digest: string;
  size: number;
  file: string;
  mediaType: string;
}

export interface LayerFile extends BlobFile {
  /** sha256 of the uncompressed tar, as listed in config rootfs.diff_ids. */
  diffId: string;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface Image {
  manifest: Buffer;
  manifestDigest: string;
  manifestMediaType: string;
  config: BlobFile;
  layers: LayerFile[];
  platform: Platform;
}

export interface ImageIndex {
  manifest: Buffer;
  manifestDigest: string;
  manifestMediaType: string;
  /** The child images, which must be pushed before the index. */
  images: Image[];
}

export interface LayerSpec {
  /** Bytes of the single regular file inside the layer tar. */
  size: number;
  /** Determines the file's name and content; same seed => same layer digest. */
  seed: string;
}

export interface MakeImageOptions {
  layers: LayerSpec[];
  arch?: string;
  os?: string;
  variant?: string;
  format?: ImageFormat;
  /**
   * zlib level for layers. Default: 1 up to 64 MiB, 0 (stored) above, since
   * level 1 runs at ~20 MB/s here and random data does not compress anyway.
   */
  gzipLevel?: number;
}

// Fixed timestamps keep digests reproducible across runs.
const FIXED_MTIME = 1_700_000_000;
const FIXED_CREATED = '2023-11-14T22:13:20Z';
const BLOCK = 512;
const CHUNK = 1 << 20;
const BIG_LAYER = 64 << 20;

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Write one octal tar header field, NUL-terminated, zero-padded. */
function writeOctal(buf: Buffer, value: number, offset: number, width: number): void {
  const text = value.toString(8).padStart(width - 1, '0');
  if (text.length > width - 1) throw new Error(`tar: value ${value} does not fit ${width} bytes`);
  buf.write(text + '\0', offset, width, 'ascii');
}

/** A POSIX ustar header: dockerd's archive/tar reader needs valid checksums. */
function tarHeader(name: string, size: number, type: 'file' | 'dir'): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar: name too long: ${name}`);
  const h = Buffer.alloc(BLOCK, 0);
  h.write(name, 0, 100, 'utf8');
  writeOctal(h, type === 'dir' ? 0o755 : 0o644, 100, 8);
  writeOctal(h, 0, 108, 8); // uid
  writeOctal(h, 0, 116, 8); // gid
  writeOctal(h, size, 124, 12);
  writeOctal(h, FIXED_MTIME, 136, 12);
  h.write('        ', 148, 8, 'ascii'); // checksum is computed with this field as spaces
  h.write(type === 'dir' ? '5' : '0', 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  h.write('root', 265, 32, 'ascii');
  h.write('root', 297, 32, 'ascii');
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

/**
 * The uncompressed layer tar as a stream: a data/ dir and one file of
 * AES-CTR keystream (fast, deterministic, incompressible) keyed by the seed.
 */
async function* layerTar(spec: LayerSpec): AsyncGenerator<Buffer> {
  const safeSeed = spec.seed.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80);
  yield tarHeader('data/', 0, 'dir');
  yield tarHeader(`data/${safeSeed}.bin`, spec.size, 'file');
  const key = createHash('sha256').update(`regcache-layer:${spec.seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16, 0));
  const zeros = Buffer.alloc(CHUNK, 0);
  let left = spec.size;
  while (left > 0) {
    const n = Math.min(left, CHUNK);
    yield cipher.update(n === CHUNK ? zeros : zeros.subarray(0, n));
    left -= n;
  }
  const pad = (BLOCK - (spec.size % BLOCK)) % BLOCK;
  // Padding to a full block, then the two zero blocks that end an archive.
  yield Buffer.alloc(pad + 2 * BLOCK, 0);
}

/** Pass-through stream that hashes and counts what flows by. */
class Measure extends Transform {
  readonly hash: Hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

function blobPath(dir: string, digest: string): string {
  return path.join(dir, 'blobs', ...digest.split(':'));
}

async function writeBlob(dir: string, data: Buffer, mediaType: string): Promise<BlobFile> {
  const digest = sha256Digest(data);
  const file = blobPath(dir, digest);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, data);
  return { digest, size: data.length, file, mediaType };
}

/** Stream a gzip'd layer to disk, hashing both the tar and the gzip output. */
async function writeLayer(dir: string, spec: LayerSpec, mediaType: string, gzipLevel: number): Promise<LayerFile> {
  await mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  const tmp = path.join(dir, 'blobs', `.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const tarMeasure = new Measure();
  const gzMeasure = new Measure();
  await pipeline(layerTar(spec), tarMeasure, createGzip({ level: gzipLevel }), gzMeasure, createWriteStream(tmp));
  const digest = `sha256:${gzMeasure.hash.digest('hex')}`;
  const file = blobPath(dir, digest);
  await rename(tmp, file);
  return { digest, size: gzMeasure.bytes, file, mediaType, diffId: `sha256:${tarMeasure.hash.digest('hex')}` };
}

function descriptor(blob: BlobFile): { mediaType: string; size: number; digest: string } {
  return { mediaType: blob.mediaType, size: blob.size, digest: blob.digest };
}

/**
 * Build a single-platform image (schema2 by default, OCI on request) in dir.
 * Blobs land in dir/blobs/sha256/<hex>; identical seeds share a layer file.
 */
export async function makeImage(dir: string, opts: MakeImageOptions): Promise<Image> {
  const format = opts.format ?? 'docker';
  const mt =
    format === 'docker'
      ? { manifest: MediaTypes.dockerManifest, config: MediaTypes.dockerConfig, layer: MediaTypes.dockerLayer }
      : { manifest: MediaTypes.ociManifest, config: MediaTypes.ociConfig, layer: MediaTypes.ociLayer };
  const platform: Platform = { architecture: opts.arch ?? 'amd64', os: opts.os ?? 'linux' };
  if (opts.variant !== undefined) platform.variant = opts.variant;

  const layers: LayerFile[] = [];
  // Sequential on purpose: huge layers would otherwise compete for 2 cores and disk.
  for (const spec of opts.layers) {
    const level = opts.gzipLevel ?? (spec.size > BIG_LAYER ? 0 : 1);
    layers.push(await writeLayer(dir, spec, mt.layer, level));
  }

  const configJson = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant !== undefined ? { variant: platform.variant } : {}),
    created: FIXED_CREATED,
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['/bin/sh'],
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: opts.layers.map((l) => ({ created: FIXED_CREATED, created_by: `regcache test layer ${l.seed} (${l.size} bytes)` })),
  };
  const config = await writeBlob(dir, Buffer.from(JSON.stringify(configJson)), mt.config);

  const manifestJson = {
    schemaVersion: 2,
    mediaType: mt.manifest,
    config: descriptor(config),
    layers: layers.map(descriptor),
  };
  const manifest = Buffer.from(JSON.stringify(manifestJson, null, 3));
  const written = await writeBlob(dir, manifest, mt.manifest);
  return { manifest, manifestDigest: written.digest, manifestMediaType: mt.manifest, config, layers, platform };
}

/** A multi-platform OCI index (default) or Docker manifest list over images. */
export async function makeIndex(dir: string, images: Image[], opts: { format?: ImageFormat } = {}): Promise<ImageIndex> {
  const mediaType = (opts.format ?? 'oci') === 'oci' ? MediaTypes.ociIndex : MediaTypes.dockerManifestList;
  const indexJson = {
    schemaVersion: 2,
    mediaType,
    manifests: images.map((img) => ({
      mediaType: img.manifestMediaType,
      size: img.manifest.length,
      digest: img.manifestDigest,
      platform: img.platform,
    })),
  };
  const manifest = Buffer.from(JSON.stringify(indexJson, null, 3));
  const written = await writeBlob(dir, manifest, mediaType);
  return { manifest, manifestDigest: written.digest, manifestMediaType: mediaType, images };
}

// Pushing lives in push.ts (HTTP concern); re-exported so callers need one import.
export { pushImage, pushIndex, type PushOptions } from './push.js';
