// What an intercepted request is, from its method and path alone (distribution spec routes).
// Names and digests are validated here so that nothing downstream sees "..", encoded slashes or
// a digest that could escape the store's layout.

export type RegistryRequest =
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'manifest-by-digest'; name: string; digest: string }
  | { kind: 'manifest-by-tag'; name: string; tag: string }
  | { kind: 'write'; name: string | null } // push, delete: gated by ALLOW_PUSH
  | { kind: 'passthrough'; what: string } // ping, tags/list, referrers, catalog, token endpoints
  | { kind: 'invalid'; status: number; code: string; message: string };

// distribution/reference: path components of lower-case alphanumerics separated by '.', '_', '__' or '-'+.
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const SHA256 = /^sha256:[a-f0-9]{64}$/;
const ANY_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const MAX_NAME = 255;

const READ_METHODS = new Set(['GET', 'HEAD']);

export function classify(method: string, rawPath: string): RegistryRequest {
  const pathname = rawPath.split('?', 1)[0]!;
  if (pathname !== '/v2' && !pathname.startsWith('/v2/')) {
    return { kind: 'passthrough', what: 'non-registry' }; // e.g. auth.docker.io/token
  }
  if (/%2f|%2e|\\/i.test(pathname) || pathname.split('/').some((seg) => seg === '..' || seg === '.')) {
    return invalid(400, 'NAME_INVALID', 'path contains dot segments, backslashes or encoded separators');
  }
  const read = READ_METHODS.has(method);
  if (pathname === '/v2' || pathname === '/v2/') return read ? { kind: 'passthrough', what: 'ping' } : { kind: 'write', name: null };
  if (pathname === '/v2/_catalog') return read ? { kind: 'passthrough', what: 'catalog' } : { kind: 'write', name: null };

  const m = /^\/v2\/(.+)\/(blobs|manifests|tags|referrers)\/(.*)$/.exec(pathname);
  if (!m) return read ? { kind: 'passthrough', what: 'other' } : { kind: 'write', name: null };
  const [, name = '', route, rest = ''] = m;
  if (name.length > MAX_NAME || !NAME.test(name)) return invalid(400, 'NAME_INVALID', 'invalid repository name');
  if (!read) return { kind: 'write', name };

  switch (route) {
    case 'blobs':
      if (rest.startsWith('uploads')) return { kind: 'passthrough', what: 'upload-status' };
      if (SHA256.test(rest)) return { kind: 'blob', name, digest: rest };
      if (ANY_DIGEST.test(rest)) return { kind: 'passthrough', what: 'blob-other-algorithm' };
      return invalid(400, 'DIGEST_INVALID', 'invalid digest');
    case 'manifests':
      if (SHA256.test(rest)) return { kind: 'manifest-by-digest', name, digest: rest };
      if (rest.includes(':')) {
        return ANY_DIGEST.test(rest) ? { kind: 'passthrough', what: 'manifest-other-algorithm' } : invalid(400, 'DIGEST_INVALID', 'invalid digest');
      }
      if (TAG.test(rest)) return { kind: 'manifest-by-tag', name, tag: rest };
      return invalid(400, 'TAG_INVALID', 'invalid tag');
    case 'tags':
      return { kind: 'passthrough', what: 'tags' };
    default:
      return { kind: 'passthrough', what: 'referrers' };
  }
}

function invalid(status: number, code: string, message: string): RegistryRequest {
  return { kind: 'invalid', status, code, message };
}
