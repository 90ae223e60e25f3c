import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { LookupAddress } from 'node:dns';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  SIGNATURE_HEADER,
  WebhookDeliveryError,
  WebhookEventKind,
  WebhookUrlError,
  blockedAddressReason,
  checkWebhookUrl,
  pinnedLookup,
  sendWebhook,
  signPayload,
  verifySignature,
  type WebhookEvent,
  type WebhookUrlProblem,
} from '../../src/notify/webhooks.js';

const SECRET = 'whsec-test-0123456789';
const BODY = '{"id":"evt-1","kind":"approved"}';
const NOW = 1_700_000_000;

describe('signatures', () => {
  it('round-trips', () => {
    const header = signPayload(SECRET, BODY, NOW);
    expect(header).toMatch(/^t=1700000000,v1=[0-9a-f]{64}$/);
    expect(verifySignature(SECRET, BODY, header, { nowSec: NOW })).toBe(true);
    expect(verifySignature(SECRET, BODY, header, { nowSec: NOW + 300 })).toBe(true);
  });

  it('refuses a tampered body, timestamp, signature or secret', () => {
    const header = signPayload(SECRET, BODY, NOW);
    const sig = header.split('v1=')[1]!;
    const flipped = `${sig.slice(0, -1)}${sig.endsWith('0') ? '1' : '0'}`;
    expect(verifySignature(SECRET, `${BODY} `, header, { nowSec: NOW })).toBe(false);
    expect(verifySignature(SECRET, BODY, `t=${NOW + 1},v1=${sig}`, { nowSec: NOW })).toBe(false);
    expect(verifySignature(SECRET, BODY, `t=${NOW},v1=${flipped}`, { nowSec: NOW })).toBe(false);
    expect(verifySignature('other-secret', BODY, header, { nowSec: NOW })).toBe(false);
    expect(verifySignature('', BODY, header, { nowSec: NOW })).toBe(false);
  });

  it('refuses stale and future timestamps outside the tolerance', () => {
    const header = signPayload(SECRET, BODY, NOW);
    expect(verifySignature(SECRET, BODY, header, { nowSec: NOW + 301 })).toBe(false);
    expect(verifySignature(SECRET, BODY, header, { nowSec: NOW - 301 })).toBe(false);
    expect(verifySignature(SECRET, BODY, header, { nowSec: NOW + 60, toleranceSec: 30 })).toBe(false);
  });

  it('accepts any of several v1 signatures (secret rotation)', () => {
    const good = signPayload(SECRET, BODY, NOW).split('v1=')[1]!;
    const old = signPayload('old-secret', BODY, NOW).split('v1=')[1]!;
    expect(verifySignature(SECRET, BODY, `t=${NOW},v1=${old},v1=${good}`, { nowSec: NOW })).toBe(true);
  });

  it.each([
    undefined,
    '',
    'garbage',
    `t=${NOW}`,
    'v1=' + 'a'.repeat(64),
    `t=${NOW},v1=${'A'.repeat(64)}`,
    `t=${NOW},v1=abc`,
    `t=${NOW},t=${NOW},v1=${'a'.repeat(64)}`,
    `t=-5,v1=${'a'.repeat(64)}`,
    `t=1e9,v1=${'a'.repeat(64)}`,
    `t=${NOW},v1=${'a'.repeat(64)},v0=x`,
    `t=${NOW};v1=${'a'.repeat(64)}`,
  ])('refuses malformed header %j', (header) => {
    expect(verifySignature(SECRET, BODY, header, { nowSec: NOW })).toBe(false);
  });
});

describe('checkWebhookUrl', () => {
  const policy = { allowHosts: ['hooks.example.com', '*.slack-like.test', '127.0.0.1', '::1', '::ffff:127.0.0.1', '10.1.2.3'] };
  const resolveTo = (...addresses: string[]) => async () => addresses;

  async function problem(url: string, p = policy, resolve = resolveTo('93.184.216.34')): Promise<WebhookUrlProblem> {
    const err = await checkWebhookUrl(url, p, resolve).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, url).toBeInstanceOf(WebhookUrlError);
    return (err as WebhookUrlError).problem;
  }

  it('passes an allow-listed host resolving to a public address', async () => {
    const result = await checkWebhookUrl('https://hooks.example.com/x?y=1', policy, resolveTo('93.184.216.34', '2606:2800:220:1::1'));
    expect(result.url.hostname).toBe('hooks.example.com');
    expect(result.addresses).toEqual(['93.184.216.34', '2606:2800:220:1::1']);
    await expect(checkWebhookUrl('https://a.b.slack-like.test/', policy, resolveTo('1.1.1.1'))).resolves.toBeTruthy();
    await expect(checkWebhookUrl('https://HOOKS.Example.COM./', policy, resolveTo('1.1.1.1'))).resolves.toBeTruthy();
  });

  it.each([
    ['10.0.0.8', 'private'],
    ['172.16.5.4', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['100.127.255.254', 'carrier-grade NAT'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf::1', 'link-local'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'IPv4-mapped loopback'],
    ['::ffff:7f00:1', 'IPv4-mapped loopback'],
    ['::ffff:169.254.169.254', 'IPv4-mapped link-local'],
    ['::ffff:10.0.0.1', 'IPv4-mapped private'],
    ['::127.0.0.1', 'IPv4-compatible loopback'],
    ['64:ff9b::a9fe:a9fe', 'NAT64 link-local'],
    ['2002:7f00:1::', '6to4 loopback'],
    ['192.0.0.1', 'IETF protocol assignments'],
    ['192.0.0.255', 'IETF protocol assignments'],
    ['198.18.0.1', 'benchmarking'],
    ['198.19.255.254', 'benchmarking'],
    ['192.0.2.1', 'documentation'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.200', 'documentation'],
    ['::ffff:0:8.8.8.8', 'IPv4-translated'],
    ['::ffff:0:0:0', 'IPv4-translated'],
    ['::ffff:0:a9fe:a9fe', 'IPv4-translated'],
    ['64:ff9b:1::808:808', 'local-use NAT64'],
    ['64:ff9b:1:ffff::1', 'local-use NAT64'],
    ['2001::1', 'Teredo'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'Teredo'],
    ['2001:db8::1', 'documentation'],
    ['2001:db8:ffff::1', 'documentation'],
    ['::ffff:192.0.2.1', 'IPv4-mapped documentation'],
    ['64:ff9b::c612:1', 'NAT64 benchmarking'],
    ['not-an-ip', 'not an IP address'],
  ])('refuses a host resolving to %s (%s)', async (address, reason) => {
    expect(blockedAddressReason(address)).toBe(reason);
    await expect(checkWebhookUrl('https://hooks.example.com/', policy, resolveTo(address))).rejects.toThrow(
      expect.objectContaining({ problem: 'private_address', message: expect.stringContaining(`(${reason})`) }),
    );
  });

  it.each([
    '8.8.8.8',
    '172.32.0.1',
    '100.128.0.1',
    '2606:4700::1111',
    '::ffff:8.8.8.8',
    '2001:4860:4860::8888',
    '191.255.255.255',
    '192.0.1.1',
    '192.0.3.1',
    '198.17.255.255',
    '198.20.0.1',
    '198.51.99.1',
    '198.51.101.1',
    '203.0.112.1',
    '203.0.114.1',
    '2001:1::1',
    '2001:db9::1',
    '64:ff9b:2::1',
  ])('treats %s as public', (address) => {
    expect(blockedAddressReason(address)).toBeNull();
  });

  it('refuses when ANY resolved address is internal', async () => {
    expect(await problem('https://hooks.example.com/', policy, resolveTo('93.184.216.34', '10.0.0.1'))).toBe('private_address');
  });

  it.each([
    'http://127.0.0.1:8080/hook',
    'http://[::1]/hook',
    'http://2130706433/',
    'http://0x7f000001/',
    'http://0177.0.0.1/',
    'http://127.1/',
    'http://[::ffff:127.0.0.1]/',
    'http://10.1.2.3/',
  ])('refuses the IP literal %s even when allow-listed (URL normalises it)', async (url) => {
    let resolved = false;
    expect(await problem(url, policy, async () => ((resolved = true), ['8.8.8.8']))).toBe('private_address');
    expect(resolved).toBe(false);
  });

  it('refuses hosts not in the allowlist', async () => {
    expect(await problem('https://evil.example.net/')).toBe('not_allowed');
    expect(await problem('https://slack-like.test/')).toBe('not_allowed'); // "*." does not cover the apex
    expect(await problem('https://evilslack-like.test/')).toBe('not_allowed');
    expect(await problem('https://hooks.example.com.evil.net/')).toBe('not_allowed');
    expect(await problem('https://8.8.8.8/')).toBe('not_allowed');
    expect(await problem('https://hooks.example.com/', { allowHosts: [] })).toBe('not_allowed');
  });

  it('refuses credentials in the URL without echoing them', async () => {
    const err = await checkWebhookUrl('https://user:hunter2@hooks.example.com/', policy, resolveTo('1.1.1.1')).catch((e: unknown) => e);
    expect((err as WebhookUrlError).problem).toBe('credentials');
    expect((err as Error).message).not.toContain('hunter2');
    expect(await problem('https://user@hooks.example.com/')).toBe('credentials');
  });

  it.each(['ftp://hooks.example.com/', 'file:///etc/passwd', 'javascript:alert(1)', 'gopher://hooks.example.com/'])('refuses the scheme of %s', async (url) => {
    expect(await problem(url)).toBe('scheme');
  });

  it('refuses an unparseable URL and an unresolvable host', async () => {
    expect(await problem('not a url')).toBe('invalid_url');
    expect(await problem('https://hooks.example.com/', policy, resolveTo())).toBe('unresolvable');
    expect(
      await problem('https://hooks.example.com/', policy, async () => {
        throw Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' });
      }),
    ).toBe('unresolvable');
  });

  it('refuses malformed allowlist entries', async () => {
    for (const bad of ['*', 'a.*.com', 'example.com:443', 'https://example.com', '']) {
      expect(await problem('https://hooks.example.com/', { allowHosts: [bad] })).toBe('invalid_policy');
    }
  });

  it('lets internal addresses through with allowPrivate', async () => {
    const open = { ...policy, allowPrivate: true };
    await expect(checkWebhookUrl('http://127.0.0.1:9999/hook', open)).resolves.toMatchObject({ addresses: ['127.0.0.1'] });
    await expect(checkWebhookUrl('http://[::1]/hook', open)).resolves.toMatchObject({ addresses: ['::1'] });
    // ...but never past the allowlist.
    await expect(checkWebhookUrl('http://127.0.0.2/', open)).rejects.toThrow(/not in allowHosts/);
  });
});

describe('sendWebhook', () => {
  interface Received {
    headers: IncomingMessage['headers'];
    body: string;
  }
  let server: Server | undefined;

  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
    server = undefined;
  });

  async function serve(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<{ url: string; received: Received[] }> {
    const received: Received[] = [];
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        received.push({ headers: req.headers, body });
        handler(req, res, body);
      });
    });
    await new Promise<void>((done) => server!.listen(0, '127.0.0.1', done));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/conveyor?key=abc`, received };
  }

  const event: WebhookEvent = {
    id: 'run-42/approval/1',
    kind: WebhookEventKind.ApprovalRequested,
    occurredAt: '2024-05-01T12:00:00.000Z',
    data: { model: 'churn', version: 7 },
  };
  const policy = { allowHosts: ['127.0.0.1'], allowPrivate: true };

  async function deliveryError(url: string, timeoutMs?: number): Promise<WebhookDeliveryError> {
    const err = await sendWebhook({ url, secret: SECRET, event, policy, timeoutMs }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebhookDeliveryError);
    const e = err as WebhookDeliveryError;
    expect(e.deliveryId).toBe(event.id);
    expect(e.message).not.toContain('key=abc'); // only the origin is named
    return e;
  }

  it('delivers a signed event the receiver can verify', async () => {
    const { url, received } = await serve((_req, res) => res.writeHead(204).end());
    const result = await sendWebhook({ url, secret: SECRET, event, policy, nowSec: () => NOW });
    expect(result).toEqual({ status: 204, deliveryId: event.id });
    expect(received).toHaveLength(1);
    const [{ headers, body }] = received as [Received];
    expect(JSON.parse(body)).toEqual({ id: event.id, kind: 'approval_requested', occurredAt: event.occurredAt, data: event.data });
    expect(headers['content-type']).toBe('application/json');
    expect(headers['x-conveyor-event']).toBe('approval_requested');
    expect(headers['x-conveyor-delivery']).toBe(event.id);
    const signature = headers[SIGNATURE_HEADER] as string;
    expect(signature).toMatch(new RegExp(`^t=${NOW},v1=[0-9a-f]{64}$`));
    expect(verifySignature(SECRET, body, signature, { nowSec: NOW })).toBe(true);
    expect(verifySignature('wrong', body, signature, { nowSec: NOW })).toBe(false);
  });

  it('sends the same body for every retry of an event', async () => {
    const { url, received } = await serve((_req, res) => res.writeHead(200).end('ok'));
    await sendWebhook({ url, secret: SECRET, event, policy, nowSec: () => NOW });
    await sendWebhook({ url, secret: SECRET, event, policy, nowSec: () => NOW + 5 });
    expect(received[0]!.body).toBe(received[1]!.body);
    expect(verifySignature(SECRET, received[1]!.body, received[1]!.headers[SIGNATURE_HEADER] as string, { nowSec: NOW + 5 })).toBe(true);
  });

  it.each([
    [500, true],
    [503, true],
    [429, true],
    [400, false],
    [404, false],
  ])('HTTP %i → retryable %s', async (status, retryable) => {
    const { url } = await serve((_req, res) => res.writeHead(status).end('nope'));
    const err = await deliveryError(url);
    expect(err.status).toBe(status);
    expect(err.retryable).toBe(retryable);
    expect(err.message).toContain(`HTTP ${status}`);
  });

  it('does not follow a redirect', async () => {
    let hits = 0;
    const { url } = await serve((_req, res) => {
      hits += 1;
      res.writeHead(302, { location: '/elsewhere' }).end();
    });
    const err = await deliveryError(url);
    expect(err.status).toBe(302);
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/redirect/);
    expect(hits).toBe(1);
  });

  it('times out on a server that never answers (retryable)', async () => {
    const { url } = await serve(() => undefined);
    const started = Date.now();
    const err = await deliveryError(url, 200);
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/timed out after 200 ms/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('reports a refused connection as retryable', async () => {
    const { url } = await serve((_req, res) => res.end());
    server!.closeAllConnections();
    await new Promise<void>((done) => server!.close(() => done()));
    server = undefined;
    const err = await deliveryError(url);
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/network error \(ECONNREFUSED\)/);
  });

  it('checks the URL before sending anything', async () => {
    let called = false;
    const fetchImpl = (async () => {
      called = true;
      return new Response(null, { status: 200 });
    }) as typeof fetch;
    await expect(sendWebhook({ url: 'http://127.0.0.1/', secret: SECRET, event, policy: { allowHosts: ['127.0.0.1'] }, fetchImpl })).rejects.toBeInstanceOf(WebhookUrlError);
    await expect(sendWebhook({ url: 'https://other.example/', secret: SECRET, event, policy, fetchImpl })).rejects.toBeInstanceOf(WebhookUrlError);
    expect(called).toBe(false);
  });

  it('treats a DNS failure as retryable', async () => {
    const err = await sendWebhook({
      url: 'https://hooks.example.com/',
      secret: SECRET,
      event,
      policy: { allowHosts: ['hooks.example.com'] },
      resolve: async () => {
        throw Object.assign(new Error('getaddrinfo EAI_AGAIN'), { code: 'EAI_AGAIN' });
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebhookDeliveryError);
    expect((err as WebhookDeliveryError).retryable).toBe(true);
  });

  it('uses an injected fetchImpl as before', async () => {
    const calls: string[] = [];
    const fetchImpl = (async (input: string | URL | Request) => {
      calls.push(String(input));
      return new Response(null, { status: 202 });
    }) as typeof fetch;
    const result = await sendWebhook({
      url: 'https://hooks.test.invalid/x',
      secret: SECRET,
      event,
      policy: { allowHosts: ['hooks.test.invalid'] },
      resolve: async () => ['93.184.216.34'],
      fetchImpl,
    });
    expect(result.status).toBe(202);
    expect(calls).toEqual(['https://hooks.test.invalid/x']);
  });

  it('connects to the checked address without resolving the name again (DNS rebinding)', async () => {
    const { url, received } = await serve((_req, res) => res.writeHead(204).end());
    const port = new URL(url).port;
    // ".invalid" never resolves in real DNS: reaching the server proves the socket used the address the check saw.
    const answers = [['127.0.0.1'], ['169.254.169.254']]; // a rebinding server would answer differently the second time
    let lookups = 0;
    const result = await sendWebhook({
      url: `http://hooks.test.invalid:${port}/hooks/conveyor?key=abc`,
      secret: SECRET,
      event,
      policy: { allowHosts: ['*.test.invalid'], allowPrivate: true },
      resolve: async (host) => {
        expect(host).toBe('hooks.test.invalid');
        return answers[lookups++] ?? [];
      },
      nowSec: () => NOW,
    });
    expect(result.status).toBe(204);
    expect(lookups).toBe(1);
    expect(received).toHaveLength(1);
    expect(received[0]!.headers.host).toBe(`hooks.test.invalid:${port}`); // the name is kept for Host (and TLS SNI)
    expect(verifySignature(SECRET, received[0]!.body, received[0]!.headers[SIGNATURE_HEADER] as string, { nowSec: NOW })).toBe(true);
  });

  it('does not fall back to DNS when the checked address refuses the connection', async () => {
    const { url } = await serve((_req, res) => res.end());
    const port = new URL(url).port;
    server!.closeAllConnections();
    await new Promise<void>((done) => server!.close(() => done()));
    server = undefined;
    const err = await sendWebhook({
      url: `http://hooks.test.invalid:${port}/`,
      secret: SECRET,
      event,
      policy: { allowHosts: ['hooks.test.invalid'], allowPrivate: true },
      resolve: async () => ['127.0.0.1'],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebhookDeliveryError);
    expect((err as Error).message).toMatch(/network error \(ECONNREFUSED\)/); // not ENOTFOUND from a second resolution
  });

  it('refuses an event id that could inject headers, and unknown kinds', async () => {
    const fetchImpl = (async () => new Response(null, { status: 200 })) as typeof fetch;
    const base = { url: 'http://127.0.0.1/', secret: SECRET, policy, fetchImpl };
    await expect(sendWebhook({ ...base, event: { ...event, id: 'a\r\nx-evil: 1' } })).rejects.toThrow(/event id/);
    await expect(sendWebhook({ ...base, event: { ...event, kind: 'nope' as WebhookEvent['kind'] } })).rejects.toThrow(/unknown webhook event kind/);
  });
});

describe('pinnedLookup', () => {
  const checked = ['93.184.216.34', '2606:2800:220:1::1', '93.184.216.35'];

  function lookup(hostname: string, options: Parameters<ReturnType<typeof pinnedLookup>>[1]) {
    return new Promise<{ err: NodeJS.ErrnoException | null; address: string | LookupAddress[]; family?: number }>((done) =>
      pinnedLookup('hooks.example.com', checked)(hostname, options, (err, address, family) => done({ err, address, family })),
    );
  }

  it('answers only with the checked addresses, honouring family and all', async () => {
    expect(await lookup('hooks.example.com', {})).toEqual({ err: null, address: '93.184.216.34', family: 4 });
    expect(await lookup('hooks.example.com', { family: 6 })).toEqual({ err: null, address: '2606:2800:220:1::1', family: 6 });
    expect(await lookup('hooks.example.com', { family: 'IPv6' })).toEqual({ err: null, address: '2606:2800:220:1::1', family: 6 });
    expect((await lookup('hooks.example.com', { all: true })).address).toEqual([
      { address: '93.184.216.34', family: 4 },
      { address: '2606:2800:220:1::1', family: 6 },
      { address: '93.184.216.35', family: 4 },
    ]);
    expect((await lookup('hooks.example.com', { all: true, family: 4 })).address).toEqual([
      { address: '93.184.216.34', family: 4 },
      { address: '93.184.216.35', family: 4 },
    ]);
    expect((await lookup('HOOKS.example.com.', { family: 0 })).address).toBe('93.184.216.34');
  });

  it('fails instead of resolving when no checked address fits or the name differs', async () => {
    const v4only = await new Promise<NodeJS.ErrnoException | null>((done) =>
      pinnedLookup('hooks.example.com', ['93.184.216.34'])('hooks.example.com', { family: 6 }, (err) => done(err)),
    );
    expect(v4only?.code).toBe('ENOTFOUND');
    const other = await lookup('metadata.internal', {});
    expect(other.err?.code).toBe('ENOTFOUND');
    expect(other.err?.message).toMatch(/only "hooks.example.com" was checked/);
  });
});
