// The gate's verdict on stored content (registry/content-gate.ts mayServe) in the shape the access tests
// assert: allowed; refused as elsewhere (another origin's private content: as for a MISS); refused with
// the origin's reason. Tests of who may read what go through the one gate, as every door does.
import type { Entry, EntryKind } from '../../src/cache/entry-index.js';
import type { ContentAccess } from '../../src/registry/content-access.js';
import { mayServe } from '../../src/registry/content-gate.js';

export type AccessDecision = { allowed: true } | { allowed: false; elsewhere: true } | { allowed: false; elsewhere: false; reason: string };

export async function checkAccess(
  access: ContentAccess,
  kind: EntryKind,
  digest: string,
  entry: Entry | undefined,
  ref: string,
  credentials: string | undefined,
): Promise<AccessDecision> {
  const verdict = await mayServe(access, { answer: 'digest-hit', kind, digest, entry, ref, credentials });
  if (verdict.serve) return { allowed: true };
  return verdict.elsewhere ? { allowed: false, elsewhere: true } : { allowed: false, elsewhere: false, reason: verdict.reason };
}
