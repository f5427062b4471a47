// deploy/kubernetes against Kubernetes' and KEDA's schemas (kubeconform, no cluster here), then
// the promises the manifests make: autoscaling, grace periods, probes, non-root, no secret inline.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { configSchema, DEFAULT_STATUS_PORTS, type ProcessName } from '../../lib/config';
import { TOPICS } from '../../lib/kafka';
import { STREAMS } from '../../lib/nats';
import { cacheDir, REPO_ROOT, stackVersions } from '../../stack/paths';
import { EVENT_RULES_GROUP } from '../../triggers/event-rules';

const v = stackVersions();
const manifestDir = path.join(REPO_ROOT, 'deploy', 'kubernetes');
const kubeconform = path.join(cacheDir(), `kubeconform-${v.KUBECONFORM_VERSION}`, 'kubeconform');
const schemas = path.join(cacheDir(), `kube-schemas-${v.KUBERNETES_SCHEMA_VERSION}-kv${v.KUBERNETES_VALIDATE_VERSION}-keda${v.KEDA_VERSION}`);
const PROCESSES = ['gateway', 'admin', 'triggers', 'worker'] as const satisfies readonly ProcessName[];
/** lib/process-runtime.ts exits on its own this long after the shutdown grace time. */
const HARD_STOP_MARGIN_S = 5;

type Labels = Record<string, string>;
type Meta = { name: string; namespace?: string; labels?: Labels; annotations?: Labels };
type EnvVar = { name: string; value?: string };
type Probe = { httpGet?: { path: string; port: string | number } };
type Container = {
  name: string;
  image: string;
  command?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: unknown }[];
  ports?: { name?: string; containerPort: number }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] }; sleep?: { seconds: number } } };
  resources?: { requests?: Labels; limits?: Labels };
  securityContext?: { runAsNonRoot?: boolean; readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string }[];
};
type PodTemplate = {
  metadata: { labels?: Labels; annotations?: Labels };
  spec: {
    serviceAccountName?: string;
    terminationGracePeriodSeconds?: number;
    securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; seccompProfile?: { type: string } };
    topologySpreadConstraints?: { topologyKey: string; whenUnsatisfiable: string; maxSkew: number; labelSelector?: { matchLabels?: Labels } }[];
    containers: Container[];
    volumes?: { name: string; emptyDir?: unknown }[];
  };
};
type Resource = { apiVersion: string; kind: string; metadata: Meta; spec?: unknown; data?: Labels };
type Workload = Resource & { kind: 'Deployment' | 'Job'; spec: { replicas?: number; selector?: { matchLabels: Labels }; template: PodTemplate } };
type Hpa = Resource & {
  spec: {
    scaleTargetRef: { kind: string; name: string };
    minReplicas: number;
    maxReplicas: number;
    metrics: { type: string; resource?: { name: string; target: { type: string; averageUtilization?: number } } }[];
    behavior: { scaleUp: { stabilizationWindowSeconds: number }; scaleDown: { stabilizationWindowSeconds: number } };
  };
};
type ScaledObject = Resource & {
  spec: { scaleTargetRef: { kind?: string; name: string }; minReplicaCount?: number; maxReplicaCount?: number; triggers: { type: string; metadata: Labels }[] };
};
type Pdb = Resource & { spec: { minAvailable?: number | string; maxUnavailable?: number | string; selector: { matchLabels: Labels } } };

const manifestFiles = readdirSync(manifestDir).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort();
// YAML 1.1, as Kubernetes reads it: an unquoted `off` or `yes` would be a boolean there too.
const resources: Resource[] = manifestFiles.flatMap((file) =>
  parseAllDocuments(readFileSync(path.join(manifestDir, file), 'utf8'), { version: '1.1' }).map((doc) => {
    assert.deepEqual(doc.errors, [], file);
    return doc.toJS() as Resource;
  }),
).filter(Boolean);
const all = <T extends Resource>(kind: string) => resources.filter((r) => r.kind === kind) as T[];
const one = <T extends Resource>(kind: string, name: string): T => {
  const found = resources.find((r) => r.kind === kind && r.metadata.name === name);
  assert.ok(found, `${kind}/${name} in deploy/kubernetes`);
  return found as T;
};
const deployment = (p: ProcessName) => one<Workload>('Deployment', `flowgate-${p}`);
const envOf = (c: Container) => Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
const configMap = one('ConfigMap', 'flowgate-config').data ?? {};
const workloads = [...all<Workload>('Deployment'), ...all<Workload>('Job')];

const tmpDirs: string[] = [];
after(() => tmpDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

type KubeconformResult = { status: number | null; stderr: string; summary: { valid: number; invalid: number; errors: number; skipped: number }; resources: { kind: string; name: string; status: string; msg: string }[] };

/** Never a skip: without the pinned kubeconform and its schemas the manifests are unchecked. */
function requireInstalled(): void {
  assert.ok(existsSync(kubeconform), `${kubeconform} missing: run make install (stack/install.sh)`);
  const version = spawnSync(kubeconform, ['-v'], { encoding: 'utf8' }).stdout?.trim();
  assert.equal(version, v.KUBECONFORM_VERSION, `${kubeconform} is not the pinned build: run make install`);
  assert.ok(existsSync(path.join(schemas, '.complete')), `${schemas} incomplete: run make install (stack/install.sh)`);
}

function runKubeconform(target: string): KubeconformResult {
  requireInstalled();
  const res = spawnSync(kubeconform, [
    '-strict', '-summary', '-verbose', '-output', 'json',
    '-kubernetes-version', v.KUBERNETES_SCHEMA_VERSION!,
    // Kustomize's own file is not a resource the API server receives (the test below checks it lists every file).
    '-ignore-filename-pattern', String.raw`kustomization\.yaml$`,
    '-schema-location', path.join(schemas, 'kubernetes', '{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}', '{{ .ResourceKind }}{{ .KindSuffix }}.json'),
    '-schema-location', path.join(schemas, 'crds', '{{ .Group }}', '{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'),
    target,
  ], { encoding: 'utf8', timeout: 60_000 });
  assert.ok(res.stdout, `kubeconform printed nothing (exit ${res.status}): ${res.stderr}`);
  return { status: res.status, stderr: res.stderr, ...(JSON.parse(res.stdout) as Omit<KubeconformResult, 'status' | 'stderr'>) };
}

test(`kubeconform: every manifest is valid against Kubernetes ${v.KUBERNETES_SCHEMA_VERSION} and KEDA ${v.KEDA_VERSION} (strict, no schema missing)`, () => {
  const res = runKubeconform(manifestDir);
  const problems = res.resources.filter((r) => r.status !== 'statusValid').map((r) => `${r.kind}/${r.name}: ${r.msg}`);
  assert.deepEqual(problems, []);
  assert.equal(res.status, 0, res.stderr);
  assert.deepEqual(res.summary, { valid: resources.length, invalid: 0, errors: 0, skipped: 0 });
  assert.ok(resources.some((r) => r.kind === 'ScaledObject'), 'the CRD schema was exercised');
});

test('kubeconform refuses a wrong type, an unknown field, a CRD violation and a kind without a schema', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-kubeconform-'));
  tmpDirs.push(dir);
  writeFileSync(path.join(dir, 'broken.yaml'), `
apiVersion: apps/v1
kind: Deployment
metadata: { name: broken }
spec:
  replicas: "three"
  selector: { matchLabels: { app: broken } }
  template:
    metadata: { labels: { app: broken } }
    spec: { containers: [{ name: broken, image: "flowgate:0.1.0" }] }
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: { name: broken }
spec:
  scaleTargetRef: { apiVersion: apps/v1, kind: Deployment, name: broken }
  minReplica: 3
  maxReplicas: 50
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: { name: broken }
spec:
  scaleTargetRef: { name: broken }
  triggers: [{ type: kafka, metadata: { lagThreshold: 100 } }]
---
apiVersion: flowgate.io/v1
kind: Gateway
metadata: { name: broken }
`);
  const res = runKubeconform(dir);
  assert.equal(res.status, 1);
  assert.deepEqual(res.summary, { valid: 0, invalid: 3, errors: 1, skipped: 0 });
  const msg = (kind: string) => res.resources.find((r) => r.kind === kind)?.msg ?? '';
  assert.match(msg('Deployment'), /replicas/);
  assert.match(msg('HorizontalPodAutoscaler'), /minReplica/);
  assert.match(msg('ScaledObject'), /lagThreshold/);
  assert.match(msg('Gateway'), /could not find schema/);
});

test('the kustomization applies every manifest, all in namespace flowgate, from one image', () => {
  const kustomization = parseAllDocuments(readFileSync(path.join(manifestDir, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as { namespace: string; resources: string[] };
  assert.deepEqual([...kustomization.resources].sort(), manifestFiles);
  assert.equal(kustomization.namespace, 'flowgate');
  one('Namespace', 'flowgate');
  for (const r of resources.filter((r) => r.kind !== 'Namespace')) assert.equal(r.metadata.namespace, 'flowgate', `${r.kind}/${r.metadata.name}`);
  const images = new Set(workloads.flatMap((w) => w.spec.template.spec.containers.map((c) => c.image)));
  assert.equal(images.size, 1, [...images].join(', '));
  assert.match([...images][0]!, /^flowgate:[\w.-]+$/);
});

test('each process: its command, its status port, probes on /healthz and /readyz there, scrape annotations', () => {
  for (const p of PROCESSES) {
    const pod = deployment(p).spec.template;
    const [c] = pod.spec.containers;
    assert.ok(c && pod.spec.containers.length === 1, p);
    assert.deepEqual(c.command, ['node', `dist/${p}/main.js`]);
    const statusPort = DEFAULT_STATUS_PORTS[p];
    assert.equal(envOf(c).FLOWGATE_STATUS_PORT, String(statusPort), p);
    assert.equal(c.ports?.find((port) => port.name === 'status')?.containerPort, statusPort, p);
    for (const [probe, route] of [['startupProbe', '/healthz'], ['livenessProbe', '/healthz'], ['readinessProbe', '/readyz']] as const) {
      assert.deepEqual(c[probe]?.httpGet, { path: route, port: 'status' }, `${p} ${probe}`);
    }
    assert.equal(pod.metadata.annotations?.['prometheus.io/scrape'], 'true', p);
    assert.equal(pod.metadata.annotations?.['prometheus.io/port'], String(statusPort), p);
    assert.equal(pod.metadata.annotations?.['prometheus.io/path'], '/metrics', p);
  }
  const publicPorts = { gateway: ['FLOWGATE_GATEWAY_PORT', 8000], admin: ['FLOWGATE_ADMIN_PORT', 8001] } as const;
  for (const [p, [variable, port]] of Object.entries(publicPorts)) {
    const c = deployment(p as ProcessName).spec.template.spec.containers[0]!;
    assert.equal(envOf(c)[variable], String(port));
    assert.equal(c.ports?.find((x) => x.name === 'http')?.containerPort, port);
    const svc = one<Resource & { spec: { selector: Labels; ports: { port: number; targetPort: string }[] } }>('Service', `flowgate-${p}`);
    assert.deepEqual(svc.spec.selector, deployment(p as ProcessName).spec.selector?.matchLabels);
    assert.deepEqual(svc.spec.ports.map((x) => [x.port, x.targetPort]), [[port, 'http']]);
  }
});

test('the environment parses with lib/config.ts and names only variables it knows', () => {
  const known = new Set(Object.keys(configSchema.shape));
  assert.equal(configMap.FLOWGATE_HOST, '0.0.0.0', 'a pod listens on every interface');
  for (const w of workloads) {
    for (const c of w.spec.template.spec.containers) {
      assert.deepEqual(c.envFrom, [{ configMapRef: { name: 'flowgate-config' } }], w.metadata.name);
      const env: Labels = { ...configMap };
      for (const e of c.env ?? []) {
        assert.ok(e.value !== undefined, `${w.metadata.name}: ${e.name} has an inline value`);
        env[e.name] = e.value;
      }
      for (const name of Object.keys(env).filter((n) => n.startsWith('FLOWGATE_'))) {
        assert.ok(known.has(name.replace(/_FILE$/, '')), `${w.metadata.name}: ${name} is not in lib/config.ts`);
        if (name.endsWith('_FILE')) delete env[name];
      }
      const parsed = configSchema.safeParse(env);
      assert.ok(parsed.success, `${w.metadata.name}: ${JSON.stringify(parsed.error?.issues)}`);
    }
  }
});

test('no secret in any manifest: Vault Agent writes them to /vault/secrets and *_FILE points there', () => {
  assert.deepEqual(all('Secret'), [], 'no Secret objects');
  const secretName = /(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|OWNER_URL)$/;
  const passwordInUrl = /\/\/[^/\s:@]+:[^/\s@]+@/;
  const values: [string, string][] = Object.entries(configMap);
  for (const w of workloads) for (const c of w.spec.template.spec.containers) for (const e of c.env ?? []) values.push([e.name, e.value ?? '']);
  for (const [name, value] of values) {
    assert.doesNotMatch(name, secretName, `${name} set inline; use ${name}_FILE`);
    assert.doesNotMatch(String(value), passwordInUrl, `${name} holds a password`);
  }
  const text = manifestFiles.map((f) => readFileSync(path.join(manifestDir, f), 'utf8')).join('\n');
  for (const localOnly of ['flowgate-local-root', 'flowgate-local-only-execution-secret', 'change-me']) assert.ok(!text.includes(localOnly), localOnly);

  for (const w of workloads) {
    const { annotations = {} } = w.spec.template.metadata;
    const sa = w.spec.template.spec.serviceAccountName;
    assert.ok(sa, `${w.metadata.name} has a service account of its own`);
    one('ServiceAccount', sa);
    assert.equal(annotations['vault.hashicorp.com/agent-inject'], 'true', w.metadata.name);
    assert.equal(annotations['vault.hashicorp.com/role'], sa, `${w.metadata.name}: Vault role = service account`);
    for (const c of w.spec.template.spec.containers) {
      const env = envOf(c);
      assert.equal(env.FLOWGATE_VAULT_TOKEN_FILE, '/vault/secrets/token', w.metadata.name);
      assert.equal(annotations['vault.hashicorp.com/agent-inject-token'], 'true', w.metadata.name);
      for (const [name, file] of Object.entries(env).filter(([n]) => n.endsWith('_FILE'))) {
        const m = /^\/vault\/secrets\/([a-z0-9-]+)$/.exec(file ?? '');
        assert.ok(m, `${w.metadata.name}: ${name}=${file} is not under /vault/secrets`);
        if (m[1] === 'token') continue;
        assert.ok(annotations[`vault.hashicorp.com/agent-inject-secret-${m[1]}`], `${w.metadata.name}: nothing renders ${file}`);
        assert.ok(annotations[`vault.hashicorp.com/agent-inject-template-${m[1]}`], `${w.metadata.name}: ${file} has no template`);
      }
    }
  }
  const gatewayEnv = envOf(deployment('gateway').spec.template.spec.containers[0]!);
  assert.equal(gatewayEnv.FLOWGATE_EXECUTION_ID_SECRET_FILE, '/vault/secrets/execution-id-secret');
  // A Job's pod completes only without the agent sidecar.
  assert.equal(one<Workload>('Job', 'flowgate-provision').spec.template.metadata.annotations?.['vault.hashicorp.com/agent-pre-populate-only'], 'true');
});

test('gateway: HPA 3 to 50 on CPU 70 % and memory 80 %, up after 30 s, down after 5 min; spread across zones', () => {
  const hpas = all<Hpa>('HorizontalPodAutoscaler');
  assert.deepEqual(hpas.map((h) => h.spec.scaleTargetRef.name), ['flowgate-gateway']);
  const { spec } = hpas[0]!;
  assert.equal(spec.scaleTargetRef.kind, 'Deployment');
  assert.equal(spec.minReplicas, 3);
  assert.equal(spec.maxReplicas, 50);
  const utilization = (name: string) => spec.metrics.find((m) => m.type === 'Resource' && m.resource?.name === name)?.resource?.target;
  assert.deepEqual(utilization('cpu'), { type: 'Utilization', averageUtilization: 70 });
  assert.deepEqual(utilization('memory'), { type: 'Utilization', averageUtilization: 80 });
  assert.equal(spec.behavior.scaleUp.stabilizationWindowSeconds, 30);
  assert.equal(spec.behavior.scaleDown.stabilizationWindowSeconds, 300);
  const gw = deployment('gateway');
  assert.equal(gw.spec.replicas, undefined, 'the HPA owns the replica count');
  const zone = gw.spec.template.spec.topologySpreadConstraints?.find((t) => t.topologyKey === 'topology.kubernetes.io/zone');
  assert.ok(zone, 'spread across zones');
  assert.equal(zone.maxSkew, 1);
  assert.deepEqual(zone.labelSelector?.matchLabels, gw.spec.selector?.matchLabels);
});

test('shutdown fits the grace period: preStop + FLOWGATE_SHUTDOWN_GRACE_MS + the hard-stop margin', () => {
  const preStopSeconds = (c: Container) => {
    const hook = c.lifecycle?.preStop;
    if (hook?.sleep) return hook.sleep.seconds;
    const cmd = hook?.exec?.command;
    return cmd && cmd[0] === 'sleep' ? Number(cmd[1]) : 0;
  };
  for (const p of PROCESSES) {
    const { spec } = deployment(p).spec.template;
    const c = spec.containers[0]!;
    const graceMs = Number(envOf(c).FLOWGATE_SHUTDOWN_GRACE_MS);
    assert.ok(graceMs > 0, `${p}: FLOWGATE_SHUTDOWN_GRACE_MS set`);
    assert.ok(preStopSeconds(c) + graceMs / 1000 + HARD_STOP_MARGIN_S <= spec.terminationGracePeriodSeconds!, `${p}: the kubelet's SIGKILL comes after the drain`);
  }
  const gw = deployment('gateway').spec.template.spec;
  assert.equal(gw.terminationGracePeriodSeconds, 30, 'seed 000');
  assert.ok(Number(envOf(gw.containers[0]!).FLOWGATE_SHUTDOWN_GRACE_MS) < 30_000);
  // Behind a Service, the endpoints go before the drain starts.
  for (const p of ['gateway', 'admin'] as const) assert.ok(preStopSeconds(deployment(p).spec.template.spec.containers[0]!) >= 3, p);
  assert.ok(deployment('worker').spec.template.spec.terminationGracePeriodSeconds! > gw.terminationGracePeriodSeconds!, 'activities drain longer');
});

test('pods run as the image\'s non-root user, read-only, with requests and limits; /tmp and the spool are emptyDirs', () => {
  for (const w of workloads) {
    const { spec } = w.spec.template;
    assert.equal(spec.securityContext?.runAsNonRoot, true, w.metadata.name);
    assert.equal(spec.securityContext?.runAsUser, 1000, `${w.metadata.name}: the image's user node`);
    assert.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault', w.metadata.name);
    const emptyDirs = new Set((spec.volumes ?? []).filter((vol) => vol.emptyDir).map((vol) => vol.name));
    for (const c of spec.containers) {
      const sc = c.securityContext;
      assert.equal(sc?.runAsNonRoot, true, c.name);
      assert.equal(sc?.readOnlyRootFilesystem, true, c.name);
      assert.equal(sc?.allowPrivilegeEscalation, false, c.name);
      assert.deepEqual(sc?.capabilities?.drop, ['ALL'], c.name);
      for (const r of ['cpu', 'memory']) {
        assert.ok(c.resources?.requests?.[r], `${c.name}: ${r} request`);
        assert.ok(c.resources?.limits?.[r], `${c.name}: ${r} limit`);
      }
      const writable = (dir: string) => (c.volumeMounts ?? []).some((m) => m.mountPath === dir && emptyDirs.has(m.name));
      assert.ok(writable('/tmp'), `${c.name}: /tmp`);
      const spool = envOf(c).FLOWGATE_SPOOL_DIR;
      if (spool) assert.ok(writable(spool), `${c.name}: ${spool}`);
    }
  }
  assert.equal(envOf(deployment('gateway').spec.template.spec.containers[0]!).FLOWGATE_SPOOL_DIR, '/var/lib/flowgate/spool');
});

test('every Deployment has a PodDisruptionBudget over exactly its pods, and at most one autoscaler', () => {
  const pdbs = all<Pdb>('PodDisruptionBudget');
  for (const p of PROCESSES) {
    const d = deployment(p);
    const covering = pdbs.filter((b) => JSON.stringify(b.spec.selector.matchLabels) === JSON.stringify(d.spec.selector?.matchLabels));
    assert.equal(covering.length, 1, `${p}: one PDB`);
    assert.ok(covering[0]!.spec.maxUnavailable !== undefined || covering[0]!.spec.minAvailable !== undefined, p);
    const scalers = [
      ...all<Hpa>('HorizontalPodAutoscaler').filter((h) => h.spec.scaleTargetRef.name === d.metadata.name),
      ...all<ScaledObject>('ScaledObject').filter((s) => s.spec.scaleTargetRef.name === d.metadata.name),
    ];
    assert.ok(scalers.length <= 1, `${p}: ${scalers.length} autoscalers`);
    if (scalers.length) assert.equal(d.spec.replicas, undefined, `${p}: the autoscaler owns the replica count`);
  }
});

test('KEDA scales the worker on its Temporal task queue and the triggers on api.events lag (and JetStream backlog)', () => {
  const scaled = all<ScaledObject>('ScaledObject');
  assert.deepEqual(scaled.map((s) => s.spec.scaleTargetRef.name).sort(), ['flowgate-triggers', 'flowgate-worker']);
  for (const s of scaled) {
    assert.equal(s.spec.scaleTargetRef.kind ?? 'Deployment', 'Deployment');
    // The CRD's CEL rule, which the JSON schema cannot express.
    assert.ok((s.spec.minReplicaCount ?? 0) <= (s.spec.maxReplicaCount ?? 100), s.metadata.name);
    assert.ok((s.spec.minReplicaCount ?? 0) >= 2, `${s.metadata.name}: never fewer than two`);
  }
  const trigger = (target: string, type: string) => {
    const t = scaled.find((s) => s.spec.scaleTargetRef.name === target)?.spec.triggers.find((x) => x.type === type);
    assert.ok(t, `${target}: ${type} trigger`);
    return t.metadata;
  };
  const temporal = trigger('flowgate-worker', 'temporal');
  assert.equal(temporal.endpoint, configMap.FLOWGATE_TEMPORAL_ADDRESS);
  assert.equal(temporal.namespace, configMap.FLOWGATE_TEMPORAL_NAMESPACE);
  assert.equal(temporal.taskQueue, configMap.FLOWGATE_TASK_QUEUE);
  assert.match(temporal.targetQueueSize ?? '', /^[1-9]\d*$/);

  const kafka = trigger('flowgate-triggers', 'kafka');
  assert.equal(kafka.bootstrapServers, configMap.FLOWGATE_KAFKA_BROKERS);
  assert.equal(kafka.topic, TOPICS.events);
  assert.equal(kafka.consumerGroup, EVENT_RULES_GROUP);
  assert.match(kafka.lagThreshold ?? '', /^[1-9]\d*$/);
  const jetstream = trigger('flowgate-triggers', 'nats-jetstream');
  assert.equal(jetstream.stream, STREAMS.triggers);
  const starters = /stream: STREAMS\.triggers,\s*durable: '([^']+)'/.exec(readFileSync(path.join(REPO_ROOT, 'triggers/main.ts'), 'utf8'))?.[1];
  assert.equal(jetstream.consumer, starters, "the trigger starters' durable consumer (triggers/main.ts)");
});
