import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Config } from './config';
import { isAddressOrCidr } from './control-plane/plugins';

/**
 * Where the gateway may send a tenant's traffic. A service's URL is chosen by a tenant (a
 * developer may write services), so without a rule a route to `127.0.0.1:9400` would hand any
 * tenant the gateway's own status port (every tenant's metrics and config), and on a machine that
 * runs the platform, its Temporal, Admin API and OpenBao.
 *
 * Refused:
 * - link-local (a cloud's metadata endpoint at 169.254.169.254), unspecified and multicast addresses, always;
 * - the gateway's own ports, and `address:port` entries of FLOWGATE_UPSTREAM_DENY naming this
 *   machine, on every one of this machine's addresses (loopback or any interface);
 * - other `address:port` entries, and CIDR entries (the platform's own network, in a cluster);
 * - loopback, unless FLOWGATE_UPSTREAM_ALLOW_LOOPBACK (a local stack, whose upstreams run on the machine).
 * Private networks are allowed: reaching internal services is what a gateway is for.
 *
 * These are the rules; the gateway applies them to the address each connection actually goes to
 * (gateway/upstream-connect.ts), and the Admin API to a URL's own address when it is saved.
 * Addresses are compared as addresses (BlockList), so `::ffff:10.0.0.5` is `10.0.0.5`.
 */

const ALWAYS = new BlockList();
for (const [network, prefix] of [['0.0.0.0', 8], ['169.254.0.0', 16], ['224.0.0.0', 4]] as const) ALWAYS.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [['::', 128], ['fe80::', 10], ['ff00::', 8]] as const) ALWAYS.addSubnet(network, prefix, 'ipv6');

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

export type DenyEntry = { cidr: string } | { address: string; port: number };

/** One FLOWGATE_UPSTREAM_DENY entry: `10.96.0.0/12`, `127.0.0.1:9400` or `[::1]:9400`; undefined when malformed. */
export function parseDenyEntry(text: string): DenyEntry | undefined {
  const s = text.trim();
  if (s.includes('/')) return isAddressOrCidr(s) ? { cidr: s } : undefined;
  const hostPort = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(s);
  if (!hostPort) return undefined;
  const address = hostPort[1] ?? hostPort[2]!;
  const port = Number(hostPort[3]);
  return isIP(address) && port > 0 && port < 65536 ? { address, port } : undefined;
}

const familyOf = (address: string) => (isIP(address) === 6 ? 'ipv6' : 'ipv4');

/** A host (brackets off) and port (the scheme's default when none is written), of a URL or of undici's connect options. */
export function targetOf(url: string | { protocol: string; hostname: string; port: string }): { host: string; port: number } {
  const u = typeof url === 'string' ? new URL(url) : url;
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port) || (u.protocol === 'https:' ? 443 : 80) };
}

export class UpstreamPolicy {
  private readonly denied = new BlockList();
  /** Ports refused on this machine's own addresses. */
  private readonly localPorts = new Set<number>();
  /** `address:port` entries on other machines: the addresses refused, by port. */
  private readonly remote = new Map<number, BlockList>();
  private readonly local = new BlockList();

  constructor(private readonly opts: { allowLoopback: boolean; deny: DenyEntry[]; ownPorts: number[] }) {
    for (const a of Object.values(networkInterfaces()).flat()) if (a) this.local.addAddress(a.address, familyOf(a.address));
    for (const p of opts.ownPorts) this.localPorts.add(p);
    for (const e of opts.deny) {
      if ('cidr' in e) {
        const [network, prefix] = e.cidr.split('/') as [string, string];
        this.denied.addSubnet(network, Number(prefix), familyOf(network));
      } else if (this.isLocal(e.address)) {
        this.localPorts.add(e.port);
      } else {
        let list = this.remote.get(e.port);
        if (!list) this.remote.set(e.port, (list = new BlockList()));
        list.addAddress(e.address, familyOf(e.address));
      }
    }
  }

  /** Why the gateway may not connect to `address` (an IP) on `port`, or undefined when it may. */
  refusal(address: string, port: number): string | undefined {
    const family = familyOf(address);
    if (ALWAYS.check(address, family)) return `${address} is a link-local, unspecified or multicast address`;
    if (this.denied.check(address, family) || this.remote.get(port)?.check(address, family)) return `${address}:${port} is denied to upstreams (FLOWGATE_UPSTREAM_DENY)`;
    if (this.isLocal(address)) {
      if (this.localPorts.has(port)) return `port ${port} of this machine is the platform's own`;
      if (LOOPBACK.check(address, family) && !this.opts.allowLoopback) return `${address} is a loopback address`;
    }
    return undefined;
  }

  /**
   * Why a URL's own address is refused, judged from its text (an IP address, or `localhost` as
   * loopback): where a service is saved, so a refused address is a 400 at once. Other names are
   * judged where they are resolved (gateway/upstream-connect.ts).
   */
  urlRefusal(url: string): string | undefined {
    const { host, port } = targetOf(url);
    if (isIP(host)) return this.refusal(host, port);
    const name = host.toLowerCase().replace(/\.$/, '');
    return name === 'localhost' || name.endsWith('.localhost') ? this.refusal('127.0.0.1', port) : undefined;
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
