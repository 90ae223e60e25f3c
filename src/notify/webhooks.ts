import { createHmac, timingSafeEqual } from 'node:crypto';
import { promises as dns, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';

/**
 * Outgoing webhooks: signed (receivers can check origin and freshness), sent only
 * to allow-listed hosts that do not resolve to internal addresses (a webhook URL
 * must not become a way to reach the metadata service or a private network).
 * The connection goes to exactly the addresses that were checked (the name is not
 * resolved a second time), so a DNS answer that changes between check and connect
 * (rebinding, a short TTL) cannot redirect a delivery to an internal address.
 * Errors name the URL's origin only: paths and queries often embed secrets.
 */
export const WebhookEventKind = {
  ApprovalRequested: 'approval_requested',
  ApprovalReminder: 'approval_reminder',
  ApprovalEscalated: 'approval_escalated',
  Approved: 'approved',
  Rejected: 'rejected',
  Expired: 'expired',
  Deployed: 'deployed',
  /** A rollout ended with production unchanged: refused by validation, rolled back on a breach, or aborted. */
  RolledBack: 'rolled_back',
  /** A monitor found drift, a data-quality problem or a performance drop. */
  MonitorBreach: 'monitor_breach',
  /** Decay or a schedule started a retraining of the model. */
  RetrainingStarted: 'retraining_started',
} as const;
export type WebhookEventKind = (typeof WebhookEventKind)[keyof typeof WebhookEventKind];
const KINDS = new Set<string>(Object.values(WebhookEventKind));

export interface WebhookEvent {
  /** Stable per event (the caller derives it), so receivers can deduplicate retries. */
  id: string;
  kind: WebhookEventKind;
  /** ISO-8601; passed in, not stamped here, so every retry sends the same body. */
  occurredAt: string;
  data: Record<string, unknown>;
}

export interface WebhookPolicy {
  /** Exact hosts ("hooks.example.com", "10.0.0.5", "[::1]") or "*.example.com" (any subdomain, not the apex). */
  allowHosts: string[];
  /** Skip the internal-address check (local development and tests only). */
  allowPrivate?: boolean;
}

export type ResolveHost = (host: string) => Promise<string[]>;

export const SIGNATURE_HEADER = 'x-conveyor-signature';

export type WebhookUrlProblem = 'invalid_url' | 'scheme' | 'credentials' | 'not_allowed' | 'unresolvable' | 'private_address' | 'invalid_policy';

export class WebhookUrlError extends Error {
  constructor(readonly problem: WebhookUrlProblem, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WebhookUrlError';
  }
}

export class WebhookDeliveryError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly deliveryId: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'WebhookDeliveryError';
  }
}

// ---- signatures --------------------------------------------------------------

function hmacHex(secret: string, body: string, timestampSec: number): string {
  if (!secret) throw new Error('webhook secret must not be empty');
  return createHmac('sha256', secret).update(`${timestampSec}.${body}`, 'utf8').digest('hex');
}

/** `t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>`: the timestamp is signed so a captured request cannot be replayed later. */
export function signPayload(secret: string, body: string, timestampSec: number): string {
  if (!Number.isSafeInteger(timestampSec) || timestampSec < 0) throw new Error('timestampSec must be a non-negative integer');
  return `t=${timestampSec},v1=${hmacHex(secret, body, timestampSec)}`;
}

export function verifySignature(
  secret: string,
  body: string,
  header: string | undefined,
  opts: { toleranceSec?: number; nowSec?: number } = {},
): boolean {
  if (!secret || typeof header !== 'string') return false;
  let ts: number | undefined;
  const sigs: string[] = [];
  for (const part of header.split(',')) {
    const m = /^\s*(t|v1)=([^\s,]+)\s*$/.exec(part);
    if (!m) return false;
    if (m[1] === 't') {
      if (ts !== undefined || !/^\d{1,15}$/.test(m[2]!)) return false;
      ts = Number(m[2]);
    } else if (/^[0-9a-f]{64}$/.test(m[2]!)) sigs.push(m[2]!);
    else return false;
  }
  if (ts === undefined || sigs.length === 0) return false;
  const now = opts.nowSec ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - ts) > (opts.toleranceSec ?? 300)) return false;
  const expected = Buffer.from(hmacHex(secret, body, ts), 'utf8');
  // Several v1 values are allowed so a sender can sign with old and new secrets during rotation.
  let ok = false;
  for (const s of sigs) if (timingSafeEqual(expected, Buffer.from(s, 'utf8'))) ok = true;
  return ok;
}

// ---- addresses ---------------------------------------------------------------

type Range = [base: number, bits: number, reason: string];
const V4_BLOCKED: Range[] = [
  [0x00000000, 8, 'unspecified'], // 0.0.0.0/8: connecting to 0.0.0.0 reaches the local host on Linux
  [0x0a000000, 8, 'private'],
  [0x64400000, 10, 'carrier-grade NAT'],
  [0x7f000000, 8, 'loopback'],
  [0xa9fe0000, 16, 'link-local'], // includes 169.254.169.254, the cloud metadata service
  [0xac100000, 12, 'private'],
  [0xc0000000, 24, 'IETF protocol assignments'], // 192.0.0.0/24
  [0xc0000200, 24, 'documentation'], // 192.0.2.0/24 TEST-NET-1
  [0xc0a80000, 16, 'private'],
  [0xc6120000, 15, 'benchmarking'], // 198.18.0.0/15
  [0xc6336400, 24, 'documentation'], // 198.51.100.0/24 TEST-NET-2
  [0xcb007100, 24, 'documentation'], // 203.0.113.0/24 TEST-NET-3
  [0xe0000000, 4, 'multicast'],
  [0xf0000000, 4, 'reserved'], // includes 255.255.255.255 broadcast
];

function parseIPv4(addr: string): number | null {
  if (isIP(addr) !== 4) return null;
  return addr.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

/** Eight 16-bit groups; the WHATWG URL parser does the hard part (dotted tails, "::"). */
function parseIPv6(addr: string): number[] | null {
  const bare = addr.replace(/%.*$/, ''); // zone id, as in fe80::1%eth0 from a resolver
  if (isIP(bare) !== 6) return null;
  const host = new URL(`http://[${bare}]/`).hostname.slice(1, -1);
  const [head = '', tail] = host.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => parseInt(g, 16));
}

function v4Reason(n: number): string | null {
  for (const [base, bits, reason] of V4_BLOCKED) if (Math.floor(n / 2 ** (32 - bits)) === Math.floor(base / 2 ** (32 - bits))) return reason;
  return null;
}

/** Why an address must not be a webhook target, or null for a public address. Unparseable input is refused. */
export function blockedAddressReason(addr: string): string | null {
  const v4 = parseIPv4(addr);
  if (v4 !== null) return v4Reason(v4);
  const g = parseIPv6(addr);
  if (!g) return 'not an IP address';
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g;
  const embedded = g6 * 65536 + g7;
  const zeros = (...xs: number[]): boolean => xs.every((x) => x === 0);
  if (zeros(g0, g1, g2, g3, g4, g5)) {
    if (g6 === 0 && g7 <= 1) return g7 === 0 ? 'unspecified' : 'loopback';
    return v4Reason(embedded) && `IPv4-compatible ${v4Reason(embedded)}`;
  }
  if (zeros(g0, g1, g2, g3, g4) && g5 === 0xffff) return v4Reason(embedded) && `IPv4-mapped ${v4Reason(embedded)}`;
  if (zeros(g0, g1, g2, g3) && g4 === 0xffff && g5 === 0) return 'IPv4-translated'; // ::ffff:0:0:0/96 (SIIT)
  if (g0 === 0x64 && g1 === 0xff9b && zeros(g2, g3, g4, g5)) return v4Reason(embedded) && `NAT64 ${v4Reason(embedded)}`;
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 1) return 'local-use NAT64'; // 64:ff9b:1::/48
  if (g0 === 0x2001 && g1 === 0) return 'Teredo'; // 2001::/32
  if (g0 === 0x2001 && g1 === 0xdb8) return 'documentation'; // 2001:db8::/32
  if (g0 === 0x2002) return v4Reason(g1 * 65536 + g2) && `6to4 ${v4Reason(g1 * 65536 + g2)}`;
  if ((g0 & 0xffc0) === 0xfe80) return 'link-local';
  if ((g0 & 0xffc0) === 0xfec0) return 'site-local';
  if ((g0 & 0xfe00) === 0xfc00) return 'private';
  if ((g0 & 0xff00) === 0xff00) return 'multicast';
  return null;
}

// ---- URL policy --------------------------------------------------------------

/** Lower-case, no brackets, no trailing dot, IPv4 in dotted form — the same normalisation URL applies. */
function normaliseHost(host: string): string | null {
  try {
    const literal = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
    const url = new URL(`http://${literal}/`);
    if (`${url.port}${url.username}${url.password}` !== '' || url.pathname !== '/' || url.search || url.hash) return null;
    return url.hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
  } catch {
    return null;
  }
}

function hostAllowed(host: string, allowHosts: readonly string[]): boolean {
  return allowHosts.some((pattern) => {
    const wildcard = pattern.startsWith('*.');
    const normalised = normaliseHost(wildcard ? pattern.slice(2) : pattern);
    if (normalised === null || normalised.includes('*')) {
      throw new WebhookUrlError('invalid_policy', `invalid allowHosts entry "${pattern}": use a host name, an IP address or "*.domain"`);
    }
    return wildcard ? host.endsWith(`.${normalised}`) : host === normalised;
  });
}

const defaultResolve: ResolveHost = async (host) => (await dns.lookup(host, { all: true })).map((a) => a.address);

/**
 * Resolves with the parsed URL and the addresses it resolved to, or throws WebhookUrlError.
 * Connect only to these addresses (sendWebhook pins them with pinnedLookup): resolving the
 * name again would let a hostile DNS server for an allow-listed domain answer differently.
 */
export async function checkWebhookUrl(
  url: string,
  policy: WebhookPolicy,
  resolve: ResolveHost = defaultResolve,
): Promise<{ url: URL; addresses: string[] }> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new WebhookUrlError('invalid_url', 'webhook URL is not a valid absolute URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new WebhookUrlError('scheme', `webhook URL scheme "${parsed.protocol}" is not allowed (use http or https)`);
  }
  if (parsed.username || parsed.password) throw new WebhookUrlError('credentials', 'webhook URL must not contain credentials');
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
  if (!hostAllowed(host, policy.allowHosts)) throw new WebhookUrlError('not_allowed', `webhook host "${host}" is not in allowHosts`);

  let addresses: string[];
  if (isIP(host)) addresses = [host];
  else {
    try {
      addresses = await resolve(host);
    } catch (err) {
      throw new WebhookUrlError('unresolvable', `webhook host "${host}" did not resolve: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    if (addresses.length === 0) throw new WebhookUrlError('unresolvable', `webhook host "${host}" resolved to no addresses`);
  }
  if (!policy.allowPrivate) {
    for (const a of addresses) {
      const reason = blockedAddressReason(a);
      if (reason) throw new WebhookUrlError('private_address', `webhook host "${host}" resolves to ${a} (${reason}); internal addresses are refused`);
    }
  }
  return { url: parsed, addresses };
}

// ---- delivery ----------------------------------------------------------------

/** The `lookup` option of net.connect / tls.connect (net's LookupFunction). */
export type LookupFunction = (
  hostname: string,
  options: LookupOptions,
  callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => void;

/**
 * A socket `lookup` that answers only with `addresses` (the ones checkWebhookUrl validated),
 * never asking DNS again. Honours `family` (0/4/6 or "IPv4"/"IPv6") and `all`, as net uses
 * them for Happy Eyeballs; any other host name is an error rather than a fresh resolution.
 */
export function pinnedLookup(host: string, addresses: readonly string[]): LookupFunction {
  const canonical = (name: string): string => name.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
  const expected = canonical(host);
  const pinned: LookupAddress[] = addresses.map((address) => ({ address, family: isIP(address.replace(/%.*$/, '')) }));
  return (hostname, options, callback) => {
    const fail = (message: string, code: string): void => {
      const err: NodeJS.ErrnoException = Object.assign(new Error(message), { code, hostname, syscall: 'getaddrinfo' });
      process.nextTick(callback, err, '', 0);
    };
    if (canonical(hostname) !== expected) return fail(`lookup of "${hostname}" refused: only "${host}" was checked`, 'ENOTFOUND');
    const opts: LookupOptions = typeof options === 'object' && options !== null ? options : {};
    const family = opts.family === 'IPv4' ? 4 : opts.family === 'IPv6' ? 6 : (opts.family ?? 0);
    const matches = pinned.filter((a) => a.family !== 0 && (family === 0 || a.family === family));
    const first = matches[0];
    if (!first) return fail(`no checked IPv${family} address for "${hostname}"`, 'ENOTFOUND');
    if (opts.all) process.nextTick(callback, null, matches.map((a) => ({ ...a })));
    else process.nextTick(callback, null, first.address, first.family);
  };
}

/** The parts of a fetch Response used here; both the global and undici's Response fit. */
interface FetchResult {
  status: number;
  type: string;
  body: { cancel(): Promise<void> } | null;
}

export interface SendWebhookInput {
  url: string;
  secret: string;
  event: WebhookEvent;
  policy: WebhookPolicy;
  timeoutMs?: number;
  fetchImpl?: typeof fetch;
  nowSec?: () => number;
  resolve?: ResolveHost;
}

/**
 * POSTs `{ id, kind, occurredAt, data }`, signed. Throws WebhookUrlError when the URL
 * breaks the policy (never retryable) and WebhookDeliveryError otherwise: `retryable`
 * for network errors, timeouts, DNS failures, 408, 429 and 5xx.
 */
export async function sendWebhook(input: SendWebhookInput): Promise<{ status: number; deliveryId: string }> {
  const { event } = input;
  const id = event.id;
  // The id travels in a header: printable ASCII only, so it cannot inject headers.
  if (typeof id !== 'string' || !/^[\x21-\x7e]{1,200}$/.test(id)) throw new Error('webhook event id must be 1-200 printable ASCII characters without spaces');
  if (!KINDS.has(event.kind)) throw new Error(`unknown webhook event kind "${String(event.kind)}"`);

  let url: URL;
  let addresses: string[];
  try {
    ({ url, addresses } = await checkWebhookUrl(input.url, input.policy, input.resolve));
  } catch (err) {
    if (err instanceof WebhookUrlError && err.problem === 'unresolvable') throw new WebhookDeliveryError(err.message, true, id, undefined, { cause: err });
    throw err;
  }
  const target = url.origin;
  const body = JSON.stringify({ id, kind: event.kind, occurredAt: event.occurredAt, data: event.data });
  const ts = (input.nowSec ?? (() => Math.floor(Date.now() / 1000)))();
  const timeoutMs = input.timeoutMs ?? 10_000;

  const init = {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'user-agent': 'conveyor-webhooks/1',
      'x-conveyor-event': event.kind,
      'x-conveyor-delivery': id,
      [SIGNATURE_HEADER]: signPayload(input.secret, body, ts),
    },
    body,
    redirect: 'manual', // a redirect could point anywhere, including an internal address
    signal: AbortSignal.timeout(timeoutMs),
  } as const;

  // Without an injected fetch, a one-request Agent connects only to the checked addresses.
  // The URL (and so the Host header and the TLS servername/certificate check) keeps the name.
  const agent = input.fetchImpl ? undefined : new Agent({ connect: { lookup: pinnedLookup(url.hostname, addresses) } });
  let res: FetchResult;
  try {
    try {
      res = input.fetchImpl ? await input.fetchImpl(url.href, init) : await undiciFetch(url.href, { ...init, dispatcher: agent });
    } catch (err) {
      const e = (err ?? {}) as Partial<Error> & { cause?: { code?: string } };
      const why = e.name === 'TimeoutError' || e.name === 'AbortError' ? `timed out after ${timeoutMs} ms` : `network error (${e.cause?.code ?? e.message})`;
      throw new WebhookDeliveryError(`webhook ${event.kind} to ${target}: ${why}`, true, id, undefined, { cause: err });
    }
    await res.body?.cancel().catch(() => undefined); // the response body is not used; free the connection
  } finally {
    await agent?.close().catch(() => agent.destroy().catch(() => undefined));
  }
  if (res.status >= 200 && res.status < 300) return { status: res.status, deliveryId: id };
  if (res.type === 'opaqueredirect' || (res.status >= 300 && res.status < 400)) {
    throw new WebhookDeliveryError(`webhook ${event.kind} to ${target}: redirect (HTTP ${res.status}) refused; configure the final URL`, false, id, res.status);
  }
  const retryable = res.status >= 500 || res.status === 429 || res.status === 408;
  throw new WebhookDeliveryError(`webhook ${event.kind} to ${target}: HTTP ${res.status}`, retryable, id, res.status);
}
