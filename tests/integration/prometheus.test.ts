// The stack's Prometheus scrapes the four Flowgate processes and loads deploy/prometheus/rules.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { PROMETHEUS_RULES_DIR } from '../../stack/servers';
import { eventually, testStack } from '../helpers/stack';

const { layout, gatewayUrl } = testStack();
const prometheusUrl = `http://127.0.0.1:${layout.ports.prometheus}`;
const FLOWGATE_JOBS = ['flowgate-admin', 'flowgate-gateway', 'flowgate-triggers', 'flowgate-worker'];

type Sample = { metric: Record<string, string>; value: [number, string] };

async function query(promql: string): Promise<Sample[]> {
  const res = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(promql)}`, { signal: AbortSignal.timeout(3000) });
  const body = (await res.json()) as { status: string; data: { resultType: string; result: Sample[] }; error?: string };
  assert.equal(body.status, 'success', body.error);
  return body.data.result;
}

describe('prometheus: the stack is scraped and alerted on', () => {
  test('is ready', async () => {
    const res = await fetch(`${prometheusUrl}/-/ready`);
    assert.equal(res.status, 200);
  });

  test('every Flowgate process is up (job flowgate-<process>)', async () => {
    let last: Sample[] = [];
    await eventually('up == 1 for the four Flowgate jobs', async () => {
      last = await query('up{job=~"flowgate-.*"}');
      return FLOWGATE_JOBS.every((job) => last.some((s) => s.metric.job === job && s.value[1] === '1'));
    }, 30_000, 1000).catch((err: Error) => {
      throw new Error(`${err.message}; last: ${JSON.stringify(last.map((s) => [s.metric.job, s.value[1]]))}`);
    });
    assert.deepEqual([...new Set(last.map((s) => s.metric.job))].sort(), FLOWGATE_JOBS);
  });

  test("the Temporal dev server's metrics are scraped too", async () => {
    await eventually('up{job="temporal"} == 1', async () => (await query('up{job="temporal"}')).some((s) => s.value[1] === '1'), 30_000, 1000);
  });

  test('the rule files are loaded and every alert evaluates without error', async () => {
    const file = parse(readFileSync(path.join(PROMETHEUS_RULES_DIR, 'flowgate.rules.yml'), 'utf8')) as { groups: { rules: { alert?: string }[] }[] };
    const expected = file.groups.flatMap((g) => g.rules.map((r) => r.alert)).filter((a): a is string => !!a).sort();
    assert.ok(expected.includes('FlowgateDataPlaneDown'));
    type Rule = { name: string; type: string; health: string; lastError?: string };
    let rules: Rule[] = [];
    await eventually('every alert rule evaluated', async () => {
      const res = await fetch(`${prometheusUrl}/api/v1/rules?type=alert`);
      const body = (await res.json()) as { data: { groups: { file: string; rules: Rule[] }[] } };
      rules = body.data.groups.flatMap((g) => g.rules);
      return rules.length === expected.length && rules.every((r) => r.health !== 'unknown');
    }, 20_000, 500);
    assert.deepEqual(rules.map((r) => r.name).sort(), expected);
    for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError ?? ''}`);
  });

  test("the gateway's metrics are queryable, with the process label", async () => {
    await eventually('process_cpu_user_seconds_total of the gateway', async () =>
      (await query('process_cpu_user_seconds_total{job="flowgate-gateway", process="gateway"}')).length > 0, 20_000, 1000);
    // A request the gateway counts, then the counter's series at the next scrape.
    assert.equal((await fetch(`${gatewayUrl}/health`)).status, 200);
    await eventually('http_requests_total for /health', async () =>
      (await query('sum(http_requests_total{job="flowgate-gateway", path="/health"})')).some((s) => Number(s.value[1]) >= 1), 20_000, 1000);
    // No data plane alert while the gateway is up.
    assert.deepEqual(await query('ALERTS{alertname="FlowgateDataPlaneDown"}'), []);
  });
});
