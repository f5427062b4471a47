// The alert rules, both Prometheus configurations and the Grafana dashboards, checked with the
// promtool that stack/install.sh unpacks into the cache (Debian's prometheus package).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { prometheusBinDir, REPO_ROOT } from '../../stack/paths';
import { DEFAULT_PORTS, PROMETHEUS_RULE_GLOB, PROMETHEUS_RULES_DIR, prometheusConfig } from '../../stack/servers';

const PROMTOOL = path.join(prometheusBinDir(), 'promtool');
const RULES = path.join(PROMETHEUS_RULES_DIR, 'flowgate.rules.yml');
const RULE_TESTS = path.join(PROMETHEUS_RULES_DIR, 'flowgate.rules.test.yml');
const COMPOSE_CONFIG = path.join(REPO_ROOT, 'deploy', 'prometheus', 'prometheus.yml');
const DASHBOARDS = path.join(REPO_ROOT, 'deploy', 'grafana', 'dashboards');
const DATASOURCES = path.join(REPO_ROOT, 'deploy', 'grafana', 'provisioning', 'datasources', 'prometheus.yml');

/** The series Flowgate's processes export (and Prometheus's own), which dashboards may query. */
const KNOWN_METRICS = new Set([
  // gateway
  'http_requests_total', 'http_request_duration_seconds_bucket', 'gateway_refusals_total', 'rate_limit_decisions_total',
  'rate_limit_redis_up', 'upstream_target_health', 'gateway_config_version', 'gateway_audit_queued', 'workflow_triggers_total',
  // triggers
  'workflow_trigger_to_start_lag_seconds_bucket', 'workflow_trigger_pickup_delay_seconds_bucket', 'workflow_consumer_dead_letters_total',
  'workflow_consumer_redeliveries_total', 'kafka_consumer_group_lag',
  // worker
  'third_party_breaker_state', 'third_party_breaker_transitions_total', 'third_party_calls_total', 'third_party_call_duration_seconds_bucket',
  'secret_rotations_total', 'payment_outcomes_total', 'payment_alerts_total', 'runbook_events_total',
  // the worker's Temporal SDK (worker/main.ts: seconds, unit and `_total` suffixes)
  'temporal_workflow_task_schedule_to_start_latency_seconds_bucket', 'temporal_activity_schedule_to_start_latency_seconds_bucket',
  'temporal_worker_task_slots_available', 'temporal_activity_execution_failed_total', 'temporal_workflow_completed_total', 'temporal_workflow_failed_total',
  // admin's heartbeat monitor
  'platform_processes_alive', 'platform_processes_silent', 'platform_process_silences_total',
  // every process (prom-client's default metrics) and Prometheus itself
  'process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_p99_seconds', 'up', 'ALERTS',
]);

/** The alerts the design asks for (the seed's four first). */
const REQUIRED_ALERTS = [
  'FlowgateDataPlaneDown', 'FlowgateHighErrorRate', 'FlowgateP99LatencyHigh', 'FlowgateKafkaConsumerLagHigh',
  'FlowgateTriggerLagHigh', 'FlowgateDeadLettersGrowing', 'FlowgateThirdPartyBreakerOpen', 'FlowgateRunbookApprovalExpiring',
  'FlowgateSecretRotationFailed', 'FlowgateProcessSilent', 'FlowgateRateLimitLocalFallback',
];

type AlertRule = { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
type RuleFile = { groups: { name: string; rules: AlertRule[] }[] };
type RuleTests = {
  rule_files: string[];
  tests: { name: string; alert_rule_test?: { eval_time: string; alertname: string; exp_alerts: unknown[] }[] }[];
};
type PromConfig = { global: Record<string, string>; rule_files: string[]; scrape_configs: { job_name: string }[] };
type Panel = { title: string; type: string; datasource?: { uid?: string }; targets?: { expr: string; datasource?: { uid?: string } }[]; panels?: Panel[] };
type Dashboard = { uid: string; title: string; panels: Panel[] };

const tmp = mkdtempSync(path.join(os.tmpdir(), 'flowgate-promtool-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function promtool(...args: string[]): { code: number | null; out: string } {
  assert.ok(existsSync(PROMTOOL), `${PROMTOOL} missing: run make install (stack/install.sh unpacks Debian's prometheus package into the cache)`);
  const r = spawnSync(PROMTOOL, args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const rules = parse(readFileSync(RULES, 'utf8')) as RuleFile;
const alerts = rules.groups.flatMap((g) => g.rules).filter((r): r is AlertRule & { alert: string } => r.alert !== undefined);

test('the alert rules pass promtool check rules', () => {
  const r = promtool('check', 'rules', RULES);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, new RegExp(`SUCCESS: ${rules.groups.flatMap((g) => g.rules).length} rules found`), r.out);
});

test('every required alert is there, with a severity and templated annotations', () => {
  const names = alerts.map((a) => a.alert);
  assert.equal(new Set(names).size, names.length, 'alert names are unique');
  for (const name of REQUIRED_ALERTS) assert.ok(names.includes(name), `alert ${name}`);
  for (const a of alerts) {
    assert.match(a.labels?.severity ?? '', /^(critical|warning|info)$/, `${a.alert} severity`);
    assert.ok(a.annotations?.summary && a.annotations.description, `${a.alert} has summary and description`);
  }
  const severity = Object.fromEntries(alerts.map((a) => [a.alert, a.labels?.severity]));
  assert.equal(severity.FlowgateDataPlaneDown, 'critical');
  assert.equal(severity.FlowgateP99LatencyHigh, 'critical');
});

test('promtool test rules: every alert fires in one case and stays quiet in another', () => {
  const r = promtool('test', 'rules', RULE_TESTS);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /SUCCESS/);
  assert.doesNotMatch(r.out, /FAILED/);
  const cases = (parse(readFileSync(RULE_TESTS, 'utf8')) as RuleTests).tests.flatMap((t) => t.alert_rule_test ?? []);
  for (const a of alerts) {
    const mine = cases.filter((c) => c.alertname === a.alert);
    assert.ok(mine.some((c) => c.exp_alerts.length > 0), `${a.alert} has a case where it fires`);
    assert.ok(mine.some((c) => c.exp_alerts.length === 0), `${a.alert} has a case where it must not fire`);
  }
});

test('a wrong expectation makes promtool test rules fail (the tests bite)', () => {
  const suite = parse(readFileSync(RULE_TESTS, 'utf8')) as RuleTests;
  // The 2 % error rate case, now expected to stay quiet.
  const firing = suite.tests.flatMap((t) => t.alert_rule_test ?? []).find((c) => c.alertname === 'FlowgateHighErrorRate' && c.exp_alerts.length > 0);
  assert.ok(firing);
  firing.exp_alerts = [];
  suite.rule_files = [RULES];
  const file = path.join(tmp, 'wrong.test.yml');
  writeFileSync(file, stringify(suite));
  const r = promtool('test', 'rules', file);
  assert.notEqual(r.code, 0, r.out);
  assert.match(r.out, /FAILED/);
  assert.match(r.out, /FlowgateHighErrorRate/);
});

test("docker-compose's prometheus.yml passes promtool check config, with its rule files", () => {
  assert.equal(promtool('check', 'config', COMPOSE_CONFIG).code, 0);
  // Its rule_files are container paths (/etc/prometheus/rules); a copy pointing at the repo's
  // directory makes promtool check the rules it would load.
  const config = parse(readFileSync(COMPOSE_CONFIG, 'utf8')) as PromConfig;
  assert.deepEqual(config.rule_files, [`/etc/prometheus/rules/${PROMETHEUS_RULE_GLOB}`]);
  const copy = path.join(tmp, 'compose-prometheus.yml');
  writeFileSync(copy, stringify({ ...config, rule_files: config.rule_files.map((f) => path.join(PROMETHEUS_RULES_DIR, path.basename(f))) }));
  const r = promtool('check', 'config', copy);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /SUCCESS: 1 rule files found/);
  assert.match(r.out, /flowgate\.rules\.yml\n\s+SUCCESS: \d+ rules found/);
});

test("make up's generated config is valid and has the same jobs and rules as docker-compose's", () => {
  const file = path.join(tmp, 'local-prometheus.yml');
  const text = prometheusConfig({ dir: tmp, ports: DEFAULT_PORTS, profile: 'dev' });
  writeFileSync(file, text);
  const r = promtool('check', 'config', file);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /flowgate\.rules\.yml\n\s+SUCCESS: \d+ rules found/);
  const local = parse(text) as PromConfig;
  const compose = parse(readFileSync(COMPOSE_CONFIG, 'utf8')) as PromConfig;
  assert.deepEqual(local.scrape_configs.map((s) => s.job_name).sort(), compose.scrape_configs.map((s) => s.job_name).sort());
  assert.deepEqual(local.rule_files.map((f) => path.basename(f)), compose.rule_files.map((f) => path.basename(f)));
  assert.equal(local.global.scrape_interval, '5s');
  for (const job of ['flowgate-gateway', 'flowgate-admin', 'flowgate-triggers', 'flowgate-worker']) {
    assert.ok(local.scrape_configs.some((s) => s.job_name === job), job);
  }
});

/** Metric names in a PromQL expression: identifiers left once strings, label matchers, ranges, grouping and function calls are removed. */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\w+/g, ' ')
    .replace(/[a-zA-Z_][a-zA-Z0-9_]*\s*\(/g, '(');
  const keywords = new Set(['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);
  return [...stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)].map((m) => m[0]).filter((n) => !keywords.has(n.toLowerCase()));
}

test('metricNames finds the series and nothing else', () => {
  assert.deepEqual(metricNames('histogram_quantile(0.99, sum by (path, le) (rate(http_request_duration_seconds_bucket{status=~"5.."}[$__rate_interval])))'),
    ['http_request_duration_seconds_bucket']);
  assert.deepEqual(metricNames('sum(rate(a_total[5m])) / sum(rate(b_total[5m])) > 0.01 or absent(up{job="x"})'), ['a_total', 'b_total', 'up']);
});

test('the Grafana dashboards parse, are unique, use the provisioned datasource and query known metrics', () => {
  const datasource = (parse(readFileSync(DATASOURCES, 'utf8')) as { datasources: { uid?: string }[] }).datasources[0]!;
  assert.ok(datasource.uid, 'the provisioned Prometheus datasource has a uid');
  const files = readdirSync(DASHBOARDS).filter((f) => f.endsWith('.json'));
  assert.ok(files.length >= 4, 'gateway, workflows, third parties, operations');
  const known = new Set([...KNOWN_METRICS, ...alerts.flatMap((a) => metricNames(a.expr))]);
  const uids = new Set<string>();
  const titles = new Set<string>();
  const exprs: string[] = [];
  for (const f of files) {
    const d = JSON.parse(readFileSync(path.join(DASHBOARDS, f), 'utf8')) as Dashboard;
    assert.ok(d.uid && !uids.has(d.uid), `${f}: unique uid ${d.uid}`);
    assert.ok(d.title && !titles.has(d.title), `${f}: unique title ${d.title}`);
    uids.add(d.uid);
    titles.add(d.title);
    const panels = d.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
    assert.ok(panels.length > 0, `${f} has panels`);
    for (const p of panels) {
      assert.equal(p.datasource?.uid, datasource.uid, `${f} "${p.title}": datasource`);
      assert.ok(p.targets?.length, `${f} "${p.title}": has a query`);
      for (const t of p.targets) {
        if (t.datasource) assert.equal(t.datasource.uid, datasource.uid, `${f} "${p.title}": query datasource`);
        const names = metricNames(t.expr);
        assert.ok(names.length > 0, `${f} "${p.title}": ${t.expr} names a metric`);
        for (const n of names) assert.ok(known.has(n), `${f} "${p.title}": unknown metric ${n} in ${t.expr}`);
        exprs.push(t.expr);
      }
    }
  }
  // Every query is valid PromQL: promtool parses them as recording rules.
  const file = path.join(tmp, 'dashboard-queries.rules.yml');
  writeFileSync(file, stringify({ groups: [{ name: 'dashboards', rules: exprs.map((e, i) => ({ record: `dashboard:query:${i}`, expr: e.replaceAll('$__rate_interval', '1m') })) }] }));
  const r = promtool('check', 'rules', file);
  assert.equal(r.code, 0, r.out);
});
