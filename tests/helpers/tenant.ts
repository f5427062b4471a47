import { randomBytes } from 'node:crypto';
import { createPool } from '../../lib/postgres';
import { ensureWorkspace, issueApiKey } from '../../lib/tenants';

/** A fresh workspace with an API key, so tests never share tenants. */
export async function newTenant(databaseUrl: string, prefix = 't'): Promise<{ tenant: string; apiKey: string }> {
  const pool = createPool(databaseUrl, 1);
  try {
    const tenant = `${prefix}-${randomBytes(5).toString('hex')}`;
    await ensureWorkspace(pool, tenant, `Test ${tenant}`);
    const { key } = await issueApiKey(pool, tenant, 'test-client');
    return { tenant, apiKey: key };
  } finally {
    await pool.end();
  }
}

/** An API key of another consumer of `tenant` (someone other than the one who started a run: an approver). */
export async function consumerKey(databaseUrl: string, tenant: string, username: string): Promise<string> {
  const pool = createPool(databaseUrl, 1);
  try {
    return (await issueApiKey(pool, tenant, username)).key;
  } finally {
    await pool.end();
  }
}
