import { lookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent } from 'undici';

/**
 * Where a webhook may go. A callback URL is chosen by a client, so a webhook to a private address
 * would let any tenant make the worker post to the platform's own services (OpenBao, the Admin
 * API, a cloud metadata endpoint) and read their status codes back from the delivery record.
 * Only public addresses are allowed unless FLOWGATE_WEBHOOK_ALLOW_PRIVATE is set (a local stack,
 * whose receivers run on the same machine).
 */

/**
 * Loopback, private, shared (CGNAT), link-local, unspecified, benchmark, multicast and reserved
 * ranges; in IPv6 also the forms that carry an IPv4 address a gateway may translate (NAT64,
 * 6to4, IPv4-compatible), whatever address they carry.
 */
const NOT_PUBLIC = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) NOT_PUBLIC.addSubnet(network, prefix, 'ipv4');
// IPv4-mapped IPv6 addresses (::ffff:127.0.0.1) are checked against the IPv4 ranges by BlockList itself.
for (const [network, prefix] of [
  ['::', 96], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64], ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8],
] as const) NOT_PUBLIC.addSubnet(network, prefix, 'ipv6');

/** True for an IP address outside the public internet. */
export function isNonPublicAddress(address: string): boolean {
  const family = isIP(address);
  return family !== 0 && NOT_PUBLIC.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

/** A connection refused because its name resolved to a non-public address. */
export class NonPublicTargetError extends Error {
  readonly code = 'ERR_NON_PUBLIC_TARGET';
}

/**
 * What in `url` is not public, judged from its text: an IP address in a non-public range or a
 * `localhost` name. Other names are judged where they are resolved for the connection
 * (`publicOnlyDispatcher`); undefined when the text alone names nothing non-public.
 */
export function nonPublicHost(url: string): string | undefined {
  const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host)) return isNonPublicAddress(host) ? host : undefined;
  const name = host.toLowerCase().replace(/\.$/, '');
  return name === 'localhost' || name.endsWith('.localhost') ? host : undefined;
}

/**
 * Why a callback URL may not be used where non-public addresses are not allowed (a message for
 * the offending field), or undefined when it may: checked where a URL is accepted (a request's
 * X-Callback-URL, a trigger rule's callback_url), and again where the webhook is sent.
 */
export function callbackRefusal(url: string, allowNonPublic: boolean): string | undefined {
  const named = allowNonPublic ? undefined : nonPublicHost(url);
  return named === undefined ? undefined : `must name a public address, not ${named}`;
}

/**
 * A dispatcher whose connections go to public addresses only: every address a name resolves to
 * is checked when it is resolved for the connection, so a name that later resolves elsewhere
 * (DNS rebinding) is caught on the connection it would be used for.
 */
export function publicOnlyDispatcher(): Agent {
  const lookup = checkedLookup((address) => (isNonPublicAddress(address) ? 'not a public address' : undefined),
    (hostname, address, why) => new NonPublicTargetError(`${hostname} resolves to ${address}, ${why}`));
  return new Agent({ connect: { lookup: lookup as never } });
}

/**
 * A `lookup` (for node:net, node:http and undici) that resolves every address of a name and
 * refuses the connection, with `errorOf`'s error, when `refusal` refuses any of them.
 */
export function checkedLookup(refusal: (address: string) => string | undefined, errorOf: (hostname: string, address: string, why: string) => Error) {
  return (hostname: string, options: LookupAllOptions, done: (err: Error | null, address: string | LookupAddress[], family?: number) => void) => {
    lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return done(err, '');
      for (const a of addresses) {
        const why = refusal(a.address);
        if (why) return done(errorOf(hostname, a.address, why), '');
      }
      if (options.all) return done(null, addresses);
      done(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}
