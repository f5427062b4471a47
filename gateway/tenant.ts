import type { IncomingHttpHeaders } from 'node:http';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { ApiError } from '../lib/errors';

/**
 * Stage 2 of the request pipeline: the tenant a request is for. Each source the request
 * carries names one; they are taken in priority order (X-Tenant-ID, the JWT's claim, the
 * host's subdomain, the API key's workspace, the client certificate) and must all agree:
 * a request that names two tenants is refused, never resolved by picking one.
 */

export type TenantSource = 'header' | 'token' | 'host' | 'credential' | 'certificate';
export type TenantClaim = { source: TenantSource; tenant: string };

const PRIORITY: TenantSource[] = ['header', 'token', 'host', 'credential', 'certificate'];
const FIELD: Record<TenantSource, string> = {
  header: 'headers.x-tenant-id', token: 'headers.authorization', host: 'headers.host', credential: 'headers.authorization', certificate: 'tls.client_certificate',
};
const TENANT_ID = /^[a-z0-9][a-z0-9-]{1,62}$/;

/** The tenant all claims agree on; 403 `tenant_mismatch` naming the first source that disagrees. */
export function resolveTenant(claims: TenantClaim[]): string {
  const sorted = [...claims].sort((a, b) => PRIORITY.indexOf(a.source) - PRIORITY.indexOf(b.source));
  const first = sorted[0];
  if (!first) throw new ApiError(401, 'tenant_unknown', 'the request names no tenant');
  const odd = sorted.find((c) => c.tenant !== first.tenant);
  if (odd) {
    // The message names the sources, not the other tenant: a caller learns nothing about tenants it does not hold.
    throw new ApiError(403, 'tenant_mismatch', `the tenant named by ${first.source} does not match the one named by ${odd.source}`, [
      { field: FIELD[first.source], message: `must match the tenant of the ${odd.source}` },
    ]);
  }
  return first.tenant;
}

/** `acme.api.example.com` with suffix `api.example.com` is tenant `acme`; other hosts name none. */
export function tenantFromHost(host: string | undefined, suffix: string | undefined): string | undefined {
  if (!host || !suffix) return undefined;
  const name = host.replace(/:\d+$/, '').toLowerCase();
  const tail = `.${suffix.toLowerCase().replace(/^\./, '')}`;
  if (!name.endsWith(tail)) return undefined;
  const label = name.slice(0, -tail.length);
  return TENANT_ID.test(label) ? label : undefined;
}

const SAN_TENANT = /^URI:urn:flowgate:tenant:([a-z0-9][a-z0-9-]{1,62})$/;

/**
 * A client certificate names its tenant with a SAN URI `urn:flowgate:tenant:<id>` (or, without
 * one, its subject's O) and its consumer with the subject's CN.
 */
export function tenantFromCertificate(cert: PeerCertificate | undefined): { tenant: string; consumer: string; fingerprint: string } | undefined {
  if (!cert || !cert.subject) return undefined;
  // Node lists SAN entries joined by ", " (a value holding one is quoted): each entry must be a
  // tenant URI exactly, and a certificate naming two tenants names none.
  const named = new Set<string>();
  for (const entry of (cert.subjectaltname ?? '').split(', ')) {
    const m = SAN_TENANT.exec(entry);
    if (m) named.add(m[1]!);
  }
  if (named.size > 1) return undefined;
  const san = named.values().next().value;
  const org = Array.isArray(cert.subject.O) ? cert.subject.O[0] : cert.subject.O;
  const cn = Array.isArray(cert.subject.CN) ? cert.subject.CN[0] : cert.subject.CN;
  const tenant = san ?? (org && TENANT_ID.test(org) ? org : undefined);
  if (!tenant || !cn) return undefined;
  return { tenant, consumer: cn, fingerprint: (cert.fingerprint256 ?? '').replace(/:/g, '').slice(0, 16).toLowerCase() };
}

/**
 * The tenants a request names by itself, before any credential: a non-empty X-Tenant-ID, the
 * host's subdomain, a verified client certificate (with the certificate's own identity).
 */
export function requestTenantClaims(headers: IncomingHttpHeaders, socket: unknown, hostSuffix: string | undefined): { claims: TenantClaim[]; cert?: ReturnType<typeof tenantFromCertificate> } {
  const claims: TenantClaim[] = [];
  const header = headers['x-tenant-id'];
  if (typeof header === 'string' && header !== '') claims.push({ source: 'header', tenant: header });
  const host = tenantFromHost(headers.host, hostSuffix);
  if (host) claims.push({ source: 'host', tenant: host });
  const tls = socket as TLSSocket;
  const cert = tls.encrypted && tls.authorized ? tenantFromCertificate(tls.getPeerCertificate()) : undefined;
  if (cert) claims.push({ source: 'certificate', tenant: cert.tenant });
  return { claims, cert };
}
