import type { VaultClient } from '../../lib/vault';
import { readCurrentSecret, thirdPartySecretPath } from '../../lib/third-party/credentials';
import { PAYMENTS_SERVICE } from '../../lib/third-party/services';
import { readMeta, writeLabels } from '../../lib/secrets';

/**
 * Makes sure Vault holds an API key the sandbox provider accepts (both forget everything when
 * they restart in dev mode): keeps a working one, otherwise asks the sandbox for a new key and
 * stores it at `secret/data/3rdparty/payments-sandbox/api_key`. Returns what it did, never the key.
 */
export async function ensureSandboxCredential(vault: VaultClient, sandboxUrl: string): Promise<'kept' | 'created'> {
  const path = thirdPartySecretPath(PAYMENTS_SERVICE);
  const current = await readCurrentSecret(vault, path).catch(() => undefined);
  if (current) {
    const res = await fetch(new URL('/v1/account', sandboxUrl), { headers: { authorization: `Bearer ${current.value}` }, signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    if (res.ok) return 'kept';
  }
  const res = await fetch(new URL('/_sandbox/api-keys', sandboxUrl), { method: 'POST', signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`payment sandbox refused to create a key: ${res.status}`);
  const key = (await res.json()) as { id: string; secret: string };
  // A fresh secret: its labels start over (the rotation runbook keeps them from here on).
  // The key's id goes with it: a rotation revokes the previous key by id.
  await vault.write(`secret/data/${path}`, { data: { value: key.secret, key_id: key.id } });
  await writeLabels(vault, path, { current: String((await readMeta(vault, path)).latest) });
  return 'created';
}
