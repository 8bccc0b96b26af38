// What listings of the cache (GET /api/v1/cache, the mirror's /v2/_catalog and tags/list) may name. A
// listing shown to anyone names only images upstream serves to anyone (the manifest's `access` is
// 'public', learned by registry/content-access.ts after it was stored); not yet known counts as private.
// An authenticated admin sees everything.
import { registryDisplayName } from '../reference/registry-name.js';
import { parseTag } from '../reference/repository-reference.js';
import type { Entry, EntryIndex } from './entry-index.js';

/** Who reads a listing: an authenticated admin, or anyone (no admin credentials, or none configured). */
export type ListingViewer = 'admin' | 'anyone';

/** May a listing shown to `viewer` name this stored manifest (its repository and tags)? */
export function mayList(entry: Entry, viewer: ListingViewer): boolean {
  return viewer === 'admin' || entry.access === 'public';
}

/**
 * registry (as shown: Docker Hub's names are one, docker.io) -> repository -> tags, from the tags the
 * index knows, of the manifests `viewer` may see.
 */
export function taggedRepositories(index: Pick<EntryIndex, 'oldestFirst'>, viewer: ListingViewer): Map<string, Map<string, Set<string>>> {
  const registries = new Map<string, Map<string, Set<string>>>();
  for (const entry of index.oldestFirst()) {
    if (entry.tags.length === 0 || !mayList(entry, viewer)) continue;
    for (const tagged of entry.tags) {
      const { registry: host, repository, tag } = parseTag(tagged);
      const registry = registryDisplayName(host);
      const repositories = registries.get(registry) ?? new Map<string, Set<string>>();
      registries.set(registry, repositories);
      const tags = repositories.get(repository) ?? new Set<string>();
      repositories.set(repository, tags);
      tags.add(tag);
    }
  }
  return registries;
}
