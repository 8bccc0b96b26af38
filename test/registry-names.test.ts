// tier: unit
// Docker Hub's three names are one registry, shown as docker.io; image references and digests as people
// type them; the mirror routes every Docker Hub name to its API host. In-process.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isDigestArgument, parseImageReference } from '../src/reference/image-reference.js';
import { displayReference, registryApiHost, registryDisplayName } from '../src/reference/registry-name.js';
import { mirrorTarget } from '../src/doors/mirror-server.js';

describe('registry names', () => {
  it('shows every Docker Hub name as docker.io and sends its API requests to registry-1.docker.io', () => {
    for (const name of ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'Registry-1.Docker.IO']) {
      assert.equal(registryDisplayName(name), 'docker.io', name);
      assert.equal(registryApiHost(name), 'registry-1.docker.io', name);
    }
    assert.equal(registryDisplayName('GHCR.io'), 'ghcr.io');
    assert.equal(registryApiHost('registry.internal:5000'), 'registry.internal:5000');
    assert.equal(displayReference('registry-1.docker.io/library/alpine:3.20'), 'docker.io/library/alpine:3.20');
    assert.equal(displayReference('index.docker.io/library/alpine@sha256:' + 'a'.repeat(64)), 'docker.io/library/alpine@sha256:' + 'a'.repeat(64));
    assert.equal(displayReference('localhost:5000/app:v1'), 'localhost:5000/app:v1');
  });

  it('routes every Docker Hub name on the mirror to the API host', () => {
    assert.equal(mirrorTarget('docker.io', undefined, null), 'registry-1.docker.io');
    assert.equal(mirrorTarget('index.docker.io', undefined, null), 'registry-1.docker.io');
    assert.equal(mirrorTarget(null, 'docker.io.mirror.test:5000', 'mirror.test'), 'registry-1.docker.io');
    assert.equal(mirrorTarget(null, 'regcache:5000', 'mirror.test'), 'registry-1.docker.io', 'no name: Docker Hub');
    assert.equal(mirrorTarget('ghcr.io', undefined, null), 'ghcr.io');
    assert.equal(mirrorTarget('bad host!', undefined, null), null);
  });

  it('reads image references by docker rules, whichever Docker Hub name they use', () => {
    const alpine = { registry: 'registry-1.docker.io', repository: 'library/alpine', tag: '3.20', digest: null };
    for (const text of ['alpine:3.20', 'docker.io/library/alpine:3.20', 'index.docker.io/alpine:3.20', 'registry-1.docker.io/library/alpine:3.20']) {
      assert.deepEqual(parseImageReference(text), alpine, text);
    }
    assert.deepEqual(parseImageReference('ghcr.io/org/app'), { registry: 'ghcr.io', repository: 'org/app', tag: 'latest', digest: null });
    assert.equal(parseImageReference(`localhost:5000/app@sha256:${'b'.repeat(64)}`).digest, `sha256:${'b'.repeat(64)}`);
  });

  it('calls a short or odd digest malformed, and anything else unreadable by name', () => {
    assert.equal(isDigestArgument(`sha256:${'c'.repeat(64)}`), true);
    assert.equal(isDigestArgument('alpine:3.20'), false);
    for (const text of ['sha256:deadbeef', `sha256:${'C'.repeat(64)}`, `sha512:${'d'.repeat(128)}`]) {
      assert.throws(() => isDigestArgument(text), /is a malformed digest: regcache stores sha256 digests/, text);
    }
    assert.throws(() => parseImageReference('alpine@sha256:dead'), /"sha256:dead" is a malformed digest/);
    assert.throws(() => parseImageReference('Not A Ref'), /is not an image reference/);
  });
});
