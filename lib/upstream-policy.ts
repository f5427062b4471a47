import { lookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { buildConnector } from 'undici';
import type { Config } from './config';

/**
 * Where the gateway may send a tenant's traffic. A service's URL is chosen by a tenant (a
 * developer may write services), so without a rule a route to `127.0.0.1:9400` would hand any
 * tenant the gateway's own status port (every tenant's metrics and config), and on a machine that
 * runs the platform, its Temporal, Admin API and OpenBao.
 *
 * Refused, checked on the address each connection actually goes to (a name is resolved here and
 * the connection made to the address checked, so DNS rebinding cannot slip past):
 * - link-local (a cloud's metadata endpoint at 169.254.169.254), unspecified and multicast addresses, always;
 * - the gateway's own ports, and `host:port` entries of FLOWGATE_UPSTREAM_DENY, on this machine's
 *   addresses (loopback or any interface);
 * - CIDR entries of FLOWGATE_UPSTREAM_DENY (the platform's own network, in a cluster);
 * - loopback, unless FLOWGATE_UPSTREAM_ALLOW_LOOPBACK (a local stack, whose upstreams run on the machine).
 * Private networks are allowed: reaching internal services is what a gateway is for.
 */

const ALWAYS = new BlockList();
for (const [network, prefix] of [['0.0.0.0', 8], ['169.254.0.0', 16], ['224.0.0.0', 4]] as const) ALWAYS.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [['::', 128], ['fe80::', 10], ['ff00::', 8]] as const) ALWAYS.addSubnet(network, prefix, 'ipv6');

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** A connection the policy refused; the gateway answers 502 `upstream_not_allowed`. */
export class UpstreamNotAllowedError extends Error {
  readonly code = 'ERR_UPSTREAM_NOT_ALLOWED';
  override name = 'UpstreamNotAllowedError';
}

export type DenyEntry = { cidr: string } | { address: string; port: number };

/** One FLOWGATE_UPSTREAM_DENY entry: `10.96.0.0/12`, `127.0.0.1:9400` or `[::1]:9400`; undefined when malformed. */
export function parseDenyEntry(text: string): DenyEntry | undefined {
  const s = text.trim();
  const cidr = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(s);
  if (cidr) {
    const family = isIP(cidr[1]!);
    const prefix = Number(cidr[2]);
    return family && prefix <= (family === 4 ? 32 : 128) ? { cidr: s } : undefined;
  }
  const hostPort = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(s);
  if (!hostPort) return undefined;
  const address = hostPort[1] ?? hostPort[2]!;
  const port = Number(hostPort[3]);
  return isIP(address) && port > 0 && port < 65536 ? { address, port } : undefined;
}

const familyOf = (address: string) => (isIP(address) === 6 ? 'ipv6' : 'ipv4');

export class UpstreamPolicy {
  private readonly denied = new BlockList();
  /** Ports refused on this machine's own addresses. */
  private readonly localPorts = new Set<number>();
  /** `address:port` entries on other machines. */
  private readonly remote = new Set<string>();
  private readonly local = new BlockList();

  constructor(private readonly opts: { allowLoopback: boolean; deny: DenyEntry[]; ownPorts: number[] }) {
    for (const a of Object.values(networkInterfaces()).flat()) if (a) this.local.addAddress(a.address, familyOf(a.address));
    for (const p of opts.ownPorts) this.localPorts.add(p);
    for (const e of opts.deny) {
      if ('cidr' in e) {
        const [network, prefix] = e.cidr.split('/') as [string, string];
        this.denied.addSubnet(network, Number(prefix), familyOf(network));
      } else if (this.isLocal(e.address)) this.localPorts.add(e.port);
      else this.remote.add(`${e.address}|${e.port}`);
    }
  }

  /** Why the gateway may not connect to `address` (an IP) on `port`, or undefined when it may. */
  refusal(address: string, port: number): string | undefined {
    const family = familyOf(address);
    if (ALWAYS.check(address, family)) return `${address} is a link-local, unspecified or multicast address`;
    if (this.denied.check(address, family) || this.remote.has(`${address}|${port}`)) return `${address}:${port} is denied to upstreams (FLOWGATE_UPSTREAM_DENY)`;
    if (this.isLocal(address)) {
      if (this.localPorts.has(port)) return `port ${port} of this machine is the platform's own`;
      if (LOOPBACK.check(address, family) && !this.opts.allowLoopback) return `${address} is a loopback address`;
    }
    return undefined;
  }

  /**
   * Why a URL's own address is refused, judged from its text (an IP address, or `localhost` as
   * loopback): where a service is saved, so a refused address is a 400 at once. Other names are
   * judged where they are resolved, by `connector`.
   */
  urlRefusal(url: string): string | undefined {
    const u = new URL(url);
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = Number(u.port) || (u.protocol === 'https:' ? 443 : 80);
    const name = host.toLowerCase().replace(/\.$/, '');
    if (isIP(host)) return this.refusal(host, port);
    return name === 'localhost' || name.endsWith('.localhost') ? this.refusal('127.0.0.1', port) : undefined;
  }

  /**
   * A `lookup` for node:http agents (a JWKS fetched by jose) to `port`: every address a name
   * resolves to is checked. An address in the URL itself is never looked up: check it with
   * `urlRefusal` first.
   */
  lookupFor(port: number) {
    return (hostname: string, options: LookupOptions, done: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => {
      lookup(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) return done(err, '');
        const refused = addresses.map((a) => this.refusal(a.address, port)).find(Boolean);
        if (refused) return done(Object.assign(new UpstreamNotAllowedError(`${hostname}:${port}: ${refused}`), { code: 'ERR_UPSTREAM_NOT_ALLOWED' }) as NodeJS.ErrnoException, '');
        if (options.all) return done(null, addresses);
        done(null, addresses[0]!.address, addresses[0]!.family);
      });
    };
  }

  /**
   * An undici connector that resolves the host itself, checks the address and connects to that
   * very address (TLS still verifies and sends the name): for every pool and agent of upstreams.
   */
  connector(options: buildConnector.BuildOptions = {}): buildConnector.connector {
    const base = buildConnector(options);
    return (opts, done) => {
      const host = opts.hostname.replace(/^\[(.*)\]$/, '$1');
      const port = Number(opts.port) || (opts.protocol === 'https:' ? 443 : 80);
      const connect = (address: string) => {
        const why = this.refusal(address, port);
        if (why) {
          done(new UpstreamNotAllowedError(`${host}:${port}: ${why}`), null);
          return;
        }
        base({ ...opts, hostname: address, servername: opts.servername ?? (isIP(host) ? undefined : host) }, done);
      };
      if (isIP(host)) connect(host);
      else lookup(host, (err, address) => (err ? done(err, null) : connect(address)));
    };
  }

  private isLocal(address: string): boolean {
    const family = familyOf(address);
    return LOOPBACK.check(address, family) || this.local.check(address, family);
  }
}

/** The policy a process's configuration sets; `ownPorts` are the gateway's own listeners. */
export function upstreamPolicyFor(config: Pick<Config, 'FLOWGATE_UPSTREAM_ALLOW_LOOPBACK' | 'FLOWGATE_UPSTREAM_DENY'>, ownPorts: number[] = []): UpstreamPolicy {
  return new UpstreamPolicy({ allowLoopback: config.FLOWGATE_UPSTREAM_ALLOW_LOOPBACK, deny: config.FLOWGATE_UPSTREAM_DENY, ownPorts });
}
