import { lookup } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { buildConnector, errors } from 'undici';
import { targetOf, type UpstreamPolicy } from '../lib/upstream-policy';
import { checkedLookup } from '../lib/webhook-targets';

/**
 * The upstream policy (lib/upstream-policy.ts) on the gateway's own connections: the name is
 * resolved here and the connection made to the very address checked (TLS still verifies and
 * sends the name), so a name that resolves elsewhere later (DNS rebinding) cannot slip past.
 */

/** A connection the policy refused; the gateway answers 502 `upstream_not_allowed`. */
export class UpstreamNotAllowedError extends Error {
  readonly code = 'ERR_UPSTREAM_NOT_ALLOWED';
  override name = 'UpstreamNotAllowedError';
}

/**
 * An undici connector for upstream pools and agents. The name's resolution counts against the
 * connect timeout, as it does in undici's own connector.
 */
export function policyConnector(policy: UpstreamPolicy, options: buildConnector.BuildOptions = {}): buildConnector.connector {
  const base = buildConnector(options);
  const timeoutMs = options.timeout ?? 10_000;
  return (opts, done) => {
    const { host, port } = targetOf(opts);
    const connect = (address: string) => {
      const why = policy.refusal(address, port);
      if (why) {
        done(new UpstreamNotAllowedError(`${host}:${port}: ${why}`), null);
        return;
      }
      base({ ...opts, hostname: address, servername: opts.servername ?? (isIP(host) ? undefined : host) }, done);
    };
    if (isIP(host)) return connect(host);
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      done(new errors.ConnectTimeoutError(`resolving ${host} took longer than ${timeoutMs} ms`), null);
    }, timeoutMs);
    lookup(host, (err, address) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) done(err, null);
      else connect(address);
    });
  };
}

/**
 * A node:http(s) agent for `url` (a JWKS jose fetches) whose lookups are checked, or why the URL's
 * own address is refused (an address in a URL is never looked up).
 */
export function policyAgent(policy: UpstreamPolicy, url: URL): { agent: http.Agent } | { refused: string } {
  const refused = policy.urlRefusal(url.href);
  if (refused) return { refused };
  const { port } = targetOf(url.href);
  const checked = checkedLookup((address) => policy.refusal(address, port), (hostname, _address, why) => new UpstreamNotAllowedError(`${hostname}:${port}: ${why}`));
  return { agent: new (url.protocol === 'https:' ? https.Agent : http.Agent)({ lookup: checked as never }) };
}
