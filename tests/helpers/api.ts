/** A small client for the gateway's public interface, as an API client would call it. */
export function gatewayClient(baseUrl: string, apiKey: string) {
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, body: json, text };
  };
  return {
    call,
    start: (type: string, input: unknown, headers?: Record<string, string>) => call('POST', `/api/workflows/${type}`, input, headers),
    status: (id: string) => call('GET', `/api/workflows/${id}`),
    result: (id: string, wait: number) => call('GET', `/api/workflows/${id}/result?wait=${wait}`),
    signal: (id: string, name: string, payload: unknown) => call('POST', `/api/workflows/${id}/signals/${name}`, payload),
    cancel: (id: string) => call('POST', `/api/workflows/${id}/cancel`),
    list: (query = '') => call('GET', `/api/workflows${query}`),
  };
}
