// Docker Hub answers to three names: `docker.io` (what people type, and containerd's `?ns=`),
// `index.docker.io` (docker's old name) and `registry-1.docker.io` (the API host clients connect to, so
// the one stored in the index). They are one registry wherever regcache names or filters by registry
// (the CLI, /api/v1/cache, the mirror's routing), shown as `docker.io`. Every other registry is its
// host[:port], lower-cased.
import { formatRepository, parseRepository } from './repository-reference.js';

/** How Docker Hub is shown. */
export const DOCKER_HUB_NAME = 'docker.io';
/** The host that serves Docker Hub's registry API. */
export const DOCKER_HUB_HOST = 'registry-1.docker.io';

const DOCKER_HUB_ALIASES = new Set([DOCKER_HUB_NAME, 'index.docker.io', DOCKER_HUB_HOST]);

export function isDockerHub(registry: string): boolean {
  return DOCKER_HUB_ALIASES.has(registry.toLowerCase());
}

/** The name shown and compared: `docker.io` for any of Docker Hub's names. */
export function registryDisplayName(registry: string): string {
  return isDockerHub(registry) ? DOCKER_HUB_NAME : registry.toLowerCase();
}

/** The host to send registry API requests to: `registry-1.docker.io` for any of Docker Hub's names. */
export function registryApiHost(registry: string): string {
  return isDockerHub(registry) ? DOCKER_HUB_HOST : registry.toLowerCase();
}

/** "registry-1.docker.io/library/alpine[:tag|@digest]" -> "docker.io/library/alpine[:tag|@digest]". */
export function displayReference(reference: string): string {
  if (!reference.includes('/')) return reference;
  const { registry, repository } = parseRepository(reference);
  return formatRepository({ registry: registryDisplayName(registry), repository });
}
