// What an intercepted request is, from its method and path alone (distribution spec routes).
// Names and digests are validated here so that nothing downstream sees "..", encoded slashes or
// a digest that could escape the store's layout.
import { digestForm } from '../reference/digest.js';
import { isRepositoryName, isTag } from '../reference/repository-reference.js';
import type { RegistryErrorKind } from './registry-errors.js';

export type Route =
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'manifest-by-digest'; name: string; digest: string }
  | { kind: 'manifest-by-tag'; name: string; tag: string }
  // OCI 1.1 referrers API: GET, no query but an optional artifactType filter (pages and the rest pass through)
  | { kind: 'referrers'; name: string; digest: string; artifactType: string | null }
  | { kind: 'write'; name: string | null } // push, delete: gated by ALLOW_PUSH
  | { kind: 'passthrough'; what: string } // ping, tags/list, referrers, catalog, token endpoints
  | { kind: 'invalid'; error: RegistryErrorKind; message: string };

const READ_METHODS = new Set(['GET', 'HEAD']);

export function classify(method: string, rawPath: string): Route {
  const pathname = rawPath.split(/[?#]/, 1)[0]!; // where URL ends the path too: "/v2#x" goes upstream as "/v2"
  // Printable ASCII only (Node's parser already refuses the rest; URL would drop tabs and newlines).
  if (!pathname.startsWith('/') || pathname.startsWith('//') || /[^\x21-\x7e]/.test(pathname)) {
    // Absolute-form or "//host/...": new URL(target, origin) would leave the registry's host.
    return invalid('target-unsupported', 'request target must be a path on this registry');
  }
  // Anywhere, not only under /v2: URL reads "\\" as "/" and resolves dot segments, so "/token/../v2/x" or
  // "/v2\\x" would reach upstream as a /v2 path that was never classified (a PUT: a push past ALLOW_PUSH).
  if (
    pathname.includes('\\') ||
    pathname
      .replace(/%2e/gi, '.')
      .split('/')
      .some((seg) => seg === '..' || seg === '.')
  ) {
    return invalid('name-invalid', 'path contains dot segments or backslashes');
  }
  if (pathname !== '/v2' && !pathname.startsWith('/v2/')) {
    return { kind: 'passthrough', what: 'non-registry' }; // e.g. auth.docker.io/token
  }
  if (/%2f|%2e/i.test(pathname)) {
    return invalid('name-invalid', 'path contains encoded separators or dots');
  }
  const read = READ_METHODS.has(method);
  if (pathname === '/v2' || pathname === '/v2/') return read ? { kind: 'passthrough', what: 'ping' } : { kind: 'write', name: null };
  if (pathname === '/v2/_catalog') return read ? { kind: 'passthrough', what: 'catalog' } : { kind: 'write', name: null };

  const m = /^\/v2\/(.+)\/(blobs|manifests|tags|referrers)\/(.*)$/.exec(pathname);
  if (!m) return read ? { kind: 'passthrough', what: 'other' } : { kind: 'write', name: null };
  const [, name = '', route, rest = ''] = m;
  if (!isRepositoryName(name)) return invalid('name-invalid', 'invalid repository name');
  if (!read) return { kind: 'write', name };

  switch (route) {
    case 'blobs': {
      if (rest.startsWith('uploads')) return { kind: 'passthrough', what: 'upload-status' };
      const form = digestForm(rest);
      if (form === 'sha256') return { kind: 'blob', name, digest: rest };
      if (form === 'other') return { kind: 'passthrough', what: 'blob-other-algorithm' };
      return invalid('digest-invalid', 'invalid digest');
    }
    case 'manifests': {
      const form = digestForm(rest);
      if (form === 'sha256') return { kind: 'manifest-by-digest', name, digest: rest };
      if (rest.includes(':')) return form === 'other' ? { kind: 'passthrough', what: 'manifest-other-algorithm' } : invalid('digest-invalid', 'invalid digest');
      if (isTag(rest)) return { kind: 'manifest-by-tag', name, tag: rest };
      return invalid('tag-invalid', 'invalid tag');
    }
    case 'tags':
      return { kind: 'passthrough', what: 'tags' };
    default:
      return referrers(method, name, rest, rawPath);
  }
}

// A media type as the artifactType filter names one (RFC 6838 names, bounded): anything else goes upstream as it is.
const MEDIA_TYPE = /^[A-Za-z0-9][\w.+-]{0,126}\/[A-Za-z0-9][\w.+-]{0,126}$/;

/** /v2/<name>/referrers/<digest>[?artifactType=<type>]: cached when it is a GET by sha256 digest with at most that filter. */
function referrers(method: string, name: string, rest: string, rawPath: string): Route {
  const form = digestForm(rest);
  if (form === 'malformed') return invalid('digest-invalid', 'invalid digest');
  const query = new URLSearchParams(rawPath.split('#', 1)[0]!.split('?').slice(1).join('?'));
  const keys = [...query.keys()];
  const artifactType = query.get('artifactType');
  const onlyFilter = keys.length === 0 || (keys.length === 1 && keys[0] === 'artifactType' && artifactType !== null && MEDIA_TYPE.test(artifactType));
  if (method !== 'GET' || form !== 'sha256' || !onlyFilter) return { kind: 'passthrough', what: 'referrers' };
  return { kind: 'referrers', name, digest: rest, artifactType: keys.length === 0 ? null : artifactType };
}

function invalid(error: RegistryErrorKind, message: string): Route {
  return { kind: 'invalid', error, message };
}
