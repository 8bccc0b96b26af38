// The names content is requested under, typed: a repository of a registry and a tag of one. The
// distribution grammar for repository names and tags lives here, and so does the one way to write them
// as regcache keeps them ("registry[:port]/repository", "registry[:port]/repository:tag": the index, the
// journal and tag pointers) and to read them back.

export interface RepositoryReference {
  registry: string; // host[:port] as the request named it (Docker Hub: the API host it connected to)
  repository: string; // "library/alpine"
}

export interface TagReference extends RepositoryReference {
  tag: string;
}

// distribution/reference: path components of lower-case alphanumerics separated by '.', '_', '__' or '-'+.
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const MAX_NAME = 255;
/** A tag as it appears in the source (also inside image references). */
export const TAG_PATTERN = '[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}';
const TAG = new RegExp(`^${TAG_PATTERN}$`);

export function isRepositoryName(name: string): boolean {
  return name.length <= MAX_NAME && NAME.test(name);
}

export function isTag(tag: string): boolean {
  return TAG.test(tag);
}

export function formatRepository(ref: RepositoryReference): string {
  return `${ref.registry}/${ref.repository}`;
}

export function formatTag(ref: TagReference): string {
  return `${formatRepository(ref)}:${ref.tag}`;
}

/** "registry/repository" as kept by regcache (the registry ends at the first "/"). */
export function parseRepository(text: string): RepositoryReference {
  const slash = text.indexOf('/');
  return { registry: text.slice(0, slash), repository: text.slice(slash + 1) };
}

/** "registry/repository:tag" as kept by regcache (repository names hold no ":", a registry's port may). */
export function parseTag(text: string): TagReference {
  const { registry, repository: rest } = parseRepository(text);
  const colon = rest.lastIndexOf(':');
  return { registry, repository: rest.slice(0, colon), tag: rest.slice(colon + 1) };
}
