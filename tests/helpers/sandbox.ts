/** The sandbox payment provider's inspection and fault switches (sandboxes/payment-provider), as tests drive them. */
export function sandboxControl(baseUrl: string) {
  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${baseUrl}${path}`, {
      method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`sandbox ${method} ${path}: ${res.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };
  type Charge = { id: string; status: string; amount: number; refunded: boolean; amount_refunded: number; idempotency_key: string | null; metadata: Record<string, string> };
  type Req = { method: string; path: string; status: number | null; idempotency_key: string | null; api_key_id: string | null; replayed: boolean; received_at: number; answered_at: number | null };
  return {
    url: baseUrl,
    faults: (tenant: string, f: { latency_ms?: number; commit_delay_ms?: number; fail_next?: number; error_rate?: number; error_status?: number; decline_rate?: number; fail_after_commit_next?: number; reject_key_next?: number }) =>
      call('PUT', '/_sandbox/faults', { tenant, ...f }),
    clearFaults: (tenant: string) => call('DELETE', `/_sandbox/faults?tenant=${encodeURIComponent(tenant)}`),
    /** The provider forgets the idempotency keys starting with `prefix`, as it does after 24 h. */
    forgetKeys: (prefix: string) => call<{ forgotten: number }>('DELETE', `/_sandbox/idempotency?prefix=${encodeURIComponent(prefix)}`),
    charges: async (tenant: string) => (await call<{ data: Charge[] }>('GET', `/_sandbox/charges?tenant=${encodeURIComponent(tenant)}`)).data,
    refunds: async (tenant: string) => (await call<{ data: { id: string; charge: string; amount: number }[] }>('GET', `/_sandbox/refunds?tenant=${encodeURIComponent(tenant)}`)).data,
    /** Oldest first (the sandbox lists newest first). */
    requests: async (tenant: string, path?: string) =>
      (await call<{ data: Req[] }>('GET', `/_sandbox/requests?tenant=${encodeURIComponent(tenant)}${path ? `&path=${encodeURIComponent(path)}` : ''}`)).data.reverse(),
    newKey: () => call<{ id: string; secret: string }>('POST', '/_sandbox/api-keys'),
    /** Rolls `keyId` with the given grace, authenticated with `secret` (as the rotation runbook will). */
    roll: async (secret: string, keyId: string, graceSeconds = 0) => {
      const res = await fetch(`${baseUrl}/v1/api_keys/${keyId}/roll`, {
        method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }, body: JSON.stringify({ expires_in_seconds: graceSeconds }),
      });
      if (!res.ok) throw new Error(`roll: ${res.status} ${await res.text()}`);
      return (await res.json()) as { id: string; secret: string };
    },
    account: async (secret: string) => {
      const res = await fetch(`${baseUrl}/v1/account`, { headers: { authorization: `Bearer ${secret}` } });
      return { status: res.status, body: (await res.json()) as { api_key_id?: string } };
    },
  };
}
