// tier: unit
// How text reads as a digest (src/reference/digest.ts), in process: the one form regcache stores
// (sha256, 64 lowercase hex), well-formed digests of other algorithms (passed through uncached), and
// everything else malformed, a registered algorithm's other encodings included; and the short form shown
// in logs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { digestForm, isSha256Digest, shortDigest } from '../src/reference/digest.js';

const HEX64 = '0123456789abcdef'.repeat(4);

describe('digests', () => {
  it('stores sha256 with 64 lowercase hex only', () => {
    assert.equal(isSha256Digest(`sha256:${HEX64}`), true);
    for (const text of [
      `sha256:${HEX64.toUpperCase()}`,
      `sha256:${HEX64}0`,
      `sha256:${HEX64.slice(1)}`,
      ` sha256:${HEX64}`,
      `sha256:${HEX64}\n`,
      `xsha256:${HEX64}`,
      HEX64,
      '',
    ])
      assert.equal(isSha256Digest(text), false, JSON.stringify(text));
  });

  it('reads well-formed digests of other algorithms as other, and anything else as malformed', () => {
    const cases: [string, 'sha256' | 'other' | 'malformed'][] = [
      [`sha256:${HEX64}`, 'sha256'],
      [`sha512:${HEX64}${HEX64}`, 'other'],
      [`blake3:${HEX64}`, 'other'], // not registered: any encoding of 32+ characters
      [`multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8`, 'other'],
      [`sha256:${HEX64.toUpperCase()}`, 'malformed'], // registered: exactly one encoding
      [`sha256:${HEX64.slice(2)}`, 'malformed'],
      [`sha512:${HEX64}`, 'malformed'],
      [`sha512:${HEX64}${HEX64}0`, 'malformed'],
      [`sha512:x${HEX64}${HEX64}`, 'malformed'],
      [`sha512:${HEX64}${HEX64}`.replace('sha512', 'Sha512'), 'malformed'],
      [`blake3:${HEX64.slice(0, 31)}`, 'malformed'], // too short to be a digest
      [`blake3..x:${HEX64}`, 'malformed'], // separators between components only
      [`blake3+:${HEX64}`, 'malformed'],
      [`blake3:${HEX64}/x`, 'malformed'],
      [` blake3:${HEX64}`, 'malformed'],
      [`blake3:${HEX64} `, 'malformed'],
      [`:${HEX64}`, 'malformed'],
      ['latest', 'malformed'],
    ];
    assert.deepEqual(
      cases.map(([text]) => [text, digestForm(text)]),
      cases,
    );
  });

  it('shows a sha256 digest by its first 12 hex characters, anything else as it is', () => {
    assert.equal(shortDigest(`sha256:${HEX64}`), '0123456789ab');
    assert.equal(shortDigest(`x-sha256:${HEX64}`), `x-sha256:${HEX64}`);
    assert.equal(shortDigest(`sha256:${HEX64}/x`), `sha256:${HEX64}/x`);
    assert.equal(shortDigest(`sha512:${HEX64}`), `sha512:${HEX64}`);
  });
});
