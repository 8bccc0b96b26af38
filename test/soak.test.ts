// tier: e2e
// exclusive: alone once set up (its minute of load, from three configurations' processes, radosgw and skopeo,
// needs the machine's CPU to itself; its set-up runs beside the suite's last files; it mounts a tmpfs, as root)
// The soak in `npm test`: one minute (SOAK_MINUTES, default 1) of mixed pulls through both configurations
// (WORKERS=2 on a small CACHE_MAX_SIZE and a tmpfs; two replicas on Ceph RGW behind haproxy) while faults
// run on a seeded schedule (SOAK_SEED replays one), then every invariant as its own subtest: no wrong
// complete body, no private leak, no spool file or live lease left, no stray multipart upload, cache verify
// clean, each store within its bound, one upstream fetch per fill attempt, resources flat. The long run is
// `npm run soak` (test/soak/main.ts), which also reports into docs/benchmarks.md; this test does not.
// Needs root (it mounts a tmpfs), exclusive use of the machine's CPU while its load runs, and dist/ built.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { machineToItself } from './harness/machine-to-itself.js';
import { TmpDirs } from './harness/tmp.js';
import { runSoak } from './soak/soak.js';

describe('soak: a minute of pulls under faults', () => {
  it('holds every invariant', { timeout: 20 * 60_000 }, async (t) => {
    const seed = process.env.SOAK_SEED ? Number(process.env.SOAK_SEED) : undefined;
    const report = await runSoak({
      minutes: Number(process.env.SOAK_MINUTES ?? 1),
      ...(seed !== undefined ? { seed } : {}),
      log: (line) => t.diagnostic(line),
      untilAlone: machineToItself,
    });
    t.diagnostic(`seed ${report.seed}: ${report.requests} requests, faults ${JSON.stringify(report.faults)}, client errors ${JSON.stringify(report.errors)}`);
    assert.ok(report.requests > 0, 'the clients made requests');
    assert.ok(
      Object.entries(report.faults).some(([kind, n]) => !kind.endsWith('(skipped)') && n > 0),
      'faults were injected',
    );
    for (const invariant of report.invariants)
      await t.test(invariant.name, (sub) => {
        if (invariant.detail) sub.diagnostic(invariant.detail);
        assert.ok(invariant.checks > 0, 'checked at least once');
        assert.ok(invariant.passed, invariant.detail);
      });
  });
});
