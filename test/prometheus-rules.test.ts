// tier: e2e
// deploy/prometheus with the real tools: `promtool check rules` accepts the alert rules, and `promtool test
// rules` runs their unit tests, one at least for every alert. (A real Prometheus loading them and
// scraping regcache: test/status-figures.test.ts.)
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { run } from './harness/proc.js';

const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../deploy/prometheus');

describe('deploy/prometheus: alert rules', () => {
  it('pass promtool check rules', async () => {
    const r = await run('promtool', ['check', 'rules', 'regcache-alerts.yaml'], { cwd: DIR });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /SUCCESS: 9 rules found/);
  });

  it('pass their unit tests, and every alert has a case that fires', async () => {
    const rules = parse(await readFile(path.join(DIR, 'regcache-alerts.yaml'), 'utf8')) as { groups: { rules: { alert?: string }[] }[] };
    const alerts = rules.groups.flatMap((g) => g.rules.map((r) => r.alert)).filter((a): a is string => a !== undefined);
    const tests = parse(await readFile(path.join(DIR, 'regcache-alerts.test.yaml'), 'utf8')) as {
      tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const firing = new Set(tests.tests.flatMap((t) => t.alert_rule_test.filter((c) => c.exp_alerts.length > 0).map((c) => c.alertname)));
    const quiet = new Set(tests.tests.flatMap((t) => t.alert_rule_test.filter((c) => c.exp_alerts.length === 0).map((c) => c.alertname)));
    assert.equal(alerts.length, 9);
    for (const alert of alerts) {
      assert.ok(firing.has(alert), `${alert} has a case where it fires`);
      assert.ok(quiet.has(alert), `${alert} has a case where it stays quiet`);
    }
    const r = await run('promtool', ['test', 'rules', 'regcache-alerts.test.yaml'], { cwd: DIR });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /SUCCESS/);
  });
});
