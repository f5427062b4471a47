import { adminTarget } from './config';

export const RUNBOOK_USAGE = `  runbook list                           the runbooks and their parameters
  runbook run NAME [--param k=v]… [--dry-run] [--follow]
                                         start a run (values are JSON when they parse, else strings)
  runbook status RUN | follow RUN        a run's timeline, once or live until it ends
  runbook approve RUN STEP [--comment C] [--payload JSON] | reject RUN STEP [--comment C]
                                         (a failover's approval: --payload '{"confirm_primary":"HOST:PORT"}')
  runbook pause RUN | resume RUN | abort RUN`;

type Step = { name: string; state: string; attempt: number; started_at?: string; ended_at?: string; output?: string; approval?: { roles: string[]; expires_at: string } };
type Run = { id: string; runbook: string; status: string; state: string | null; steps: Step[]; figures: Record<string, number>; error: string | null };

const MARK: Record<string, string> = { pending: '·', running: '▶', awaiting_approval: '⏸', completed: '✔', failed: '✖', skipped: '–', rolled_back: '↺' };
const CLOSED = new Set(['COMPLETED', 'FAILED', 'CANCELED', 'TERMINATED', 'TIMED_OUT']);

function stepLine(s: Step): string {
  const times = s.started_at ? ` ${s.started_at}${s.ended_at ? ` → ${s.ended_at} (${((Date.parse(s.ended_at) - Date.parse(s.started_at)) / 1000).toFixed(1)} s)` : ''}` : '';
  const gate = s.state === 'awaiting_approval' && s.approval ? ` — needs ${s.approval.roles.join(' or ')} before ${s.approval.expires_at}` : '';
  const attempt = s.attempt > 1 ? ` attempt ${s.attempt}` : '';
  // A decided gate's output names who approved or rejected it.
  return `  ${MARK[s.state] ?? '?'} ${s.name.padEnd(18)} ${s.state}${attempt}${times}${gate}${s.output ? `  ${s.output}` : ''}`;
}

function progress(run: Run): string {
  const done = run.steps.filter((s) => ['completed', 'skipped', 'rolled_back'].includes(s.state)).length;
  return `[${done}/${run.steps.length}]`;
}

/** `flowgate runbook …` against the Admin API, with the operator's token. */
export async function runbookCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { url, token } = adminTarget(['FLOWGATE_OPERATOR_TOKEN', 'FLOWGATE_ADMIN_TOKEN']);
  const call = async <T>(method: string, p: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${url}${p}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    const text = await res.text();
    if (!res.ok) throw new Error(`${res.status}: ${text}`);
    return JSON.parse(text) as T;
  };
  const flag = (name: string) => { const i = rest.indexOf(name); return i >= 0 ? rest[i + 1] : undefined; };

  const follow = async (id: string): Promise<number> => {
    const shown = new Map<string, string>();
    for (;;) {
      const run = await call<Run>('GET', `/runs/${encodeURIComponent(id)}`);
      for (const s of run.steps) {
        const line = stepLine(s);
        if (shown.get(s.name) !== line && s.state !== 'pending') {
          console.log(`${progress(run)} ${line.trim()}`);
          shown.set(s.name, line);
        }
      }
      if (CLOSED.has(run.status)) {
        console.log(`${run.id}: ${run.status} (${run.state})${run.error ? ` — ${run.error}` : ''}`);
        for (const [k, v] of Object.entries(run.figures)) console.log(`  ${k} = ${v}`);
        return run.status === 'COMPLETED' ? 0 : 1;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  try {
    switch (sub) {
      case 'list': {
        const { data } = await call<{ data: { name: string; description: string; steps: string[]; params: { properties?: Record<string, { type?: string; default?: unknown; enum?: unknown[] }> } }[] }>('GET', '/runbooks');
        for (const r of data) {
          console.log(`${r.name}: ${r.description}`);
          for (const [k, v] of Object.entries(r.params.properties ?? {})) console.log(`    --param ${k}=${v.enum ? v.enum.join('|') : v.type ?? 'value'}${v.default !== undefined ? ` (default ${JSON.stringify(v.default)})` : ''}`);
          console.log(`    steps: ${r.steps.join(' → ')}`);
        }
        return 0;
      }
      case 'run': {
        const name = rest[0];
        if (!name) throw new Error('runbook run NAME');
        const params: Record<string, unknown> = {};
        rest.forEach((a, i) => {
          if (a !== '--param') return;
          const kv = rest[i + 1] ?? '';
          const eq = kv.indexOf('=');
          if (eq < 1) throw new Error(`--param ${kv}: expected k=v`);
          const raw = kv.slice(eq + 1);
          try { params[kv.slice(0, eq)] = JSON.parse(raw); } catch { params[kv.slice(0, eq)] = raw; }
        });
        const started = await call<{ id: string }>('POST', `/runbooks/${encodeURIComponent(name)}/runs`, { params, dry_run: rest.includes('--dry-run') });
        console.log(`started ${started.id}`);
        return rest.includes('--follow') ? follow(started.id) : 0;
      }
      case 'status': {
        const run = await call<Run>('GET', `/runs/${encodeURIComponent(rest[0] ?? '')}`);
        console.log(`${run.id} ${run.runbook}: ${run.status} (${run.state}) ${progress(run)}`);
        for (const s of run.steps) console.log(stepLine(s));
        return 0;
      }
      case 'follow':
        return follow(rest[0] ?? '');
      case 'approve':
      case 'reject': {
        const [id, step] = rest;
        if (!id || !step) throw new Error(`runbook ${sub} RUN STEP`);
        const payloadText = flag('--payload');
        let payload: unknown;
        if (payloadText !== undefined) {
          try { payload = JSON.parse(payloadText); } catch { throw new Error(`--payload must be JSON, e.g. '{"confirm_primary":"127.0.0.1:5432"}'`); }
        }
        const s = await call<Step>('POST', `/runs/${encodeURIComponent(id)}/steps/${encodeURIComponent(step)}/${sub}`, { comment: flag('--comment'), ...(payload === undefined ? {} : { payload }) });
        console.log(stepLine(s));
        return 0;
      }
      case 'pause':
      case 'resume':
      case 'abort':
        await call('POST', `/runs/${encodeURIComponent(rest[0] ?? '')}/${sub}`);
        console.log(`${sub}: asked`);
        return 0;
      default:
        console.error(`usage:\n${RUNBOOK_USAGE}`);
        return 2;
    }
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }
}
