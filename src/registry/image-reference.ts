// Image references as people type them (docker's rules: "alpine" is Docker Hub's library/alpine:latest),
// and the sha256 digests regcache stores content by.
import { DOCKER_HUB_HOST, isDockerHub } from './registry-name.js';

export interface ImageReference {
  registry: string; // the API host: registry-1.docker.io for Docker Hub
  repository: string;
  tag: string;
  digest: string | null;
}

export class ImageReferenceError extends Error {
  override name = 'ImageReferenceError';
}

const DIGEST = /^sha256:[a-f0-9]{64}$/;
// What is meant as a digest (an algorithm, a colon), well-formed or not: "sha256:deadbeef", "sha512:...".
const DIGEST_LIKE = /^sha\d+:/i;

export function isDigest(text: string): boolean {
  return DIGEST.test(text);
}

/** Whether the text is meant as a digest; a malformed one throws, naming what a digest looks like. */
export function isDigestArgument(text: string): boolean {
  if (!DIGEST_LIKE.test(text)) return false;
  checkDigest(text);
  return true;
}

export function parseImageReference(text: string): ImageReference {
  const at = text.indexOf('@');
  if (at >= 0) checkDigest(text.slice(at + 1));
  const m = /^(?:([^/]+)\/)?([a-z0-9._/-]+?)(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$/.exec(text);
  if (!m) throw new ImageReferenceError(`${JSON.stringify(text)} is not an image reference or a sha256 digest (e.g. alpine:3.20, ghcr.io/org/app@sha256:...)`);
  let [, first, rest = '', tag = 'latest', digest = null] = m;
  let registry = DOCKER_HUB_HOST;
  if (first !== undefined && (first.includes('.') || first.includes(':') || first === 'localhost')) registry = isDockerHub(first) ? DOCKER_HUB_HOST : first;
  else if (first !== undefined) rest = `${first}/${rest}`;
  if (registry === DOCKER_HUB_HOST && !rest.includes('/')) rest = `library/${rest}`;
  return { registry: registry.toLowerCase(), repository: rest, tag, digest };
}

function checkDigest(text: string): void {
  if (!DIGEST.test(text)) {
    throw new ImageReferenceError(`${JSON.stringify(text)} is a malformed digest: regcache stores sha256 digests, "sha256:" and 64 lower-case hex digits`);
  }
}
