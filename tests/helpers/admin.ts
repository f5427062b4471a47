import { randomBytes } from 'node:crypto';
import { createPool } from '../../lib/postgres';
import { ensureWorkspace, issueAdminToken } from '../../lib/tenants';
import { gatewayClient } from './api';

export type HttpCall = ReturnType<typeof gatewayClient>['call'];

/** A fresh workspace with one Admin API token per built-in role, and a platform-wide admin token. */
export async function adminTenant(databaseUrl: string, adminUrl: string, prefix = 'adm') {
  const pool = createPool(databaseUrl, 1);
  try {
    const tenant = `${prefix}-${randomBytes(5).toString('hex')}`;
    await ensureWorkspace(pool, tenant, `Test ${tenant}`);
    const tokens: Record<string, string> = {};
    for (const role of ['admin', 'operator', 'developer', 'viewer']) tokens[role] = (await issueAdminToken(pool, tenant, `${tenant}-${role}`, role)).token;
    const platform = (await issueAdminToken(pool, null, `${tenant}-platform`, 'admin')).token;
    const as = (token: string): HttpCall => gatewayClient(adminUrl, token).call;
    return { tenant, tokens, platform, as, admin: as(tokens.admin!) };
  } finally {
    await pool.end();
  }
}
