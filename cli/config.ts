import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { REPO_ROOT } from '../stack/paths';

/**
 * The Admin API's URL and a token: FLOWGATE_ADMIN_URL and the first of `tokenVars` set in the
 * environment, else in .flowgate/local.env (written by make up).
 */
export function adminTarget(tokenVars: string[] = ['FLOWGATE_ADMIN_TOKEN']): { url: string; token: string } {
  const file = path.join(REPO_ROOT, '.flowgate', 'local.env');
  const local: Record<string, string> = existsSync(file)
    ? Object.fromEntries(readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
    : {};
  const url = process.env.FLOWGATE_ADMIN_URL ?? local.FLOWGATE_ADMIN_URL;
  const token = tokenVars.map((v) => process.env[v]).find(Boolean) ?? tokenVars.map((v) => local[v]).find(Boolean);
  if (!url || !token) throw new Error(`set FLOWGATE_ADMIN_URL and ${tokenVars.join(' or ')} (or run make up, which writes .flowgate/local.env)`);
  return { url, token };
}

export const CONFIG_USAGE = `  config export [--workspace W]              the workspace as declarative YAML on stdout
  config diff FILE [--workspace W]           what syncing FILE would change
  config sync FILE [--workspace W] [--dry-run]  make the workspace equal to FILE, in one transaction
                                             (--dry-run: what it would change, changing nothing)`;

/** `flowgate config export|diff|sync` against the Admin API. */
export async function configCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  let workspace: string | undefined;
  let dryRun = false;
  const files: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === '--workspace' && rest[i + 1] !== undefined) workspace = rest[++i];
    else if (a === '--dry-run' && sub === 'sync') dryRun = true;
    else if (a.startsWith('-')) {
      // An unknown flag is refused, never ignored: a misspelt --dry-run must not sync for real.
      console.error(`unknown option ${a}\n${CONFIG_USAGE}`);
      return 2;
    } else files.push(a);
  }
  const file = files[0];
  const { url, token } = adminTarget();
  const params = new URLSearchParams({ ...(workspace ? { workspace } : {}), ...(dryRun ? { dry_run: 'true' } : {}) }).toString();
  const q = params ? `?${params}` : '';
  const call = async (method: string, p: string, body?: string) => {
    const res = await fetch(`${url}${p}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/yaml' } : {}) }, body });
    const text = await res.text();
    if (!res.ok) {
      console.error(`${res.status}: ${text}`);
      return { ok: false, text };
    }
    return { ok: true, text };
  };
  switch (sub) {
    case 'export': {
      const r = await call('GET', `/config/export${q}`);
      if (r.ok) process.stdout.write(r.text);
      return r.ok ? 0 : 1;
    }
    case 'diff':
    case 'sync': {
      if (!file) {
        console.error(CONFIG_USAGE);
        return 2;
      }
      const r = await call('POST', `/config/${sub}${q}`, await readFile(file, 'utf8'));
      if (r.ok) console.log(JSON.stringify(JSON.parse(r.text), null, 2));
      return r.ok ? 0 : 1;
    }
    default:
      console.error(CONFIG_USAGE);
      return 2;
  }
}
