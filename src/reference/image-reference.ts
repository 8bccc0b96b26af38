// Image references as people type them (docker's rules: "alpine" is Docker Hub's library/alpine:latest),
// and the sha256 digests regcache stores content by.
import { SHA256_PATTERN, isSha256Digest } from './digest.js';
import { DOCKER_HUB_HOST, isDockerHub } from './registry-name.js';
import { TAG_PATTERN, type TagReference } from './repository-reference.js';

/** registry: the API host (registry-1.docker.io for Docker Hub); tag "latest" when none was typed. */
export interface ImageReference extends TagReference {
  digest: string | null;
}

export class ImageReferenceError extends Error {
  override name = 'ImageReferenceError';
}

// What is meant as a digest (an algorithm, a colon), well-formed or not: "sha256:deadbeef", "sha512:...".
const DIGEST_LIKE = /^sha\d+:/i;

/** Whether the text is meant as a digest; a malformed one throws, naming what a digest looks like. */
export function isDigestArgument(text: string): boolean {
  if (!DIGEST_LIKE.test(text)) return false;
  checkDigest(text);
  return true;
}

// [registry/]repository[:tag][@digest]; the repository is read loosely here (what is not in the store is
// "not in the cache" later), the tag and digest by the grammar every other part of regcache uses.
const IMAGE_REFERENCE = new RegExp(`^(?:([^/]+)\\/)?([a-z0-9._/-]+?)(?::(${TAG_PATTERN}))?(?:@(${SHA256_PATTERN}))?$`);

export function parseImageReference(text: string): ImageReference {
  const at = text.indexOf('@');
  if (at >= 0) checkDigest(text.slice(at + 1));
  const m = IMAGE_REFERENCE.exec(text);
  if (!m) throw new ImageReferenceError(`${JSON.stringify(text)} is not an image reference or a sha256 digest (e.g. alpine:3.20, ghcr.io/org/app@sha256:...)`);
  let [, first, rest = '', tag = 'latest', digest = null] = m;
  let registry = DOCKER_HUB_HOST;
  if (first !== undefined && (first.includes('.') || first.includes(':') || first === 'localhost')) registry = isDockerHub(first) ? DOCKER_HUB_HOST : first;
  else if (first !== undefined) rest = `${first}/${rest}`;
  if (registry === DOCKER_HUB_HOST && !rest.includes('/')) rest = `library/${rest}`;
  return { registry: registry.toLowerCase(), repository: rest, tag, digest };
}

function checkDigest(text: string): void {
  if (!isSha256Digest(text)) {
    throw new ImageReferenceError(`${JSON.stringify(text)} is a malformed digest: regcache stores sha256 digests, "sha256:" and 64 lower-case hex digits`);
  }
}
