import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decide, startPipeline, waitForRun } from '../../src/runs.js';
import { RunOutcome } from '../../src/shared/errors.js';
import { verifySignature } from '../../src/notify/webhooks.js';
import { startTestEnv, type TestEnv } from '../helpers/stack.js';
import { examplePipeline, refusal, waitForStatus } from '../helpers/pipelines.js';

const SECRET = 'test-webhook-secret-0123456789';

interface Received {
  kind: string;
  delivery: string;
  valid: boolean;
  body: { kind: string; data: Record<string, unknown> };
}


describe('approval policies: quorum, groups, four-eyes, reminders, escalation, signed webhooks', () => {
  let env: TestEnv;
  let receiver: Server;
  let hookUrl: string;
  const received: Received[] = [];
  /** Deliveries to /flaky fail this many times first (500), to prove retries are durable. */
  let flakyFailuresLeft = 2;
  const flakyAttempts: string[] = [];

  beforeAll(async () => {
    receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (req.url === '/flaky') {
          flakyAttempts.push(String(req.headers['x-conveyor-delivery']));
          if (flakyFailuresLeft-- > 0) return void res.writeHead(500).end();
        }
        received.push({
          kind: String(req.headers['x-conveyor-event']),
          delivery: String(req.headers['x-conveyor-delivery']),
          valid: verifySignature(SECRET, body, req.headers['x-conveyor-signature'] as string | undefined),
          body: JSON.parse(body) as Received['body'],
        });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/conveyor`;
    env = await startTestEnv('policy', {}, { CONVEYOR_WEBHOOK_SECRET: SECRET, CONVEYOR_WEBHOOK_ALLOW_HOSTS: '127.0.0.1', CONVEYOR_WEBHOOK_ALLOW_PRIVATE: 'true' });
  });
  afterAll(async () => {
    await env?.close();
    receiver?.close();
  });

  it('quorum 2 of 3 by group membership; a repeated decision returns the first result; webhooks are signed', async () => {
    const pipeline = await examplePipeline((s) => ({
      ...s,
      approval: { mode: 'manual', groups: ['risk-reviewers'], quorum: 2, timeout: '10m' },
      notifications: { webhooks: [{ url: hookUrl }] },
    }));
    const handle = await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' });
    const status = await waitForStatus(handle, (s) => s.awaitingApproval !== undefined);
    const a = status.awaitingApproval!;
    expect(a).toMatchObject({ quorum: 2, groups: ['risk-reviewers'], approvals: [] });
    const base = { model: 'credit-risk', version: a.version, sha256: a.sha256 };
    const reviewers = ['risk-reviewers'];

    expect(await refusal(decide(handle, 'approve', { ...base, reviewer: 'mallory', groups: ['ml-eng'] }))).toContain('may not decide');
    expect(await refusal(decide(handle, 'approve', { ...base, reviewer: 'alice', groups: reviewers }))).toContain('four-eyes');

    const first = await decide(handle, 'approve', { ...base, reviewer: 'bob', groups: reviewers, comment: 'AUC fine' });
    expect(first).toMatchObject({ decision: 'approval_recorded', approvals: 1, quorum: 2 });
    // The same request again (same update id) is answered with the first result, not counted twice.
    expect(await decide(handle, 'approve', { ...base, reviewer: 'bob', groups: reviewers })).toEqual(first);
    // The same reviewer cannot turn around and reject.
    expect(await refusal(decide(handle, 'reject', { ...base, reviewer: 'bob', groups: reviewers, comment: 'changed my mind' }))).toContain('cannot be reversed');
    expect((await waitForStatus(handle, (s) => (s.awaitingApproval?.approvals.length ?? 0) === 1)).awaitingApproval?.approvals[0]?.reviewer).toBe('bob');

    const second = await decide(handle, 'approve', { ...base, reviewer: 'carol', groups: reviewers });
    expect(second).toMatchObject({ decision: 'approved', approvals: 2 });
    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Deployed);
    expect(await env.registry.getDecision('credit-risk', a.version)).toMatchObject({ decision: 'approved', by: ['bob', 'carol'] });

    for (let i = 0; i < 100 && !received.some((r) => r.kind === 'deployed'); i++) await sleep(100);
    const kinds = received.map((r) => r.kind);
    expect(kinds).toEqual(expect.arrayContaining(['approval_requested', 'approved', 'deployed']));
    expect(received.every((r) => r.valid)).toBe(true);
    expect(new Set(received.map((r) => r.delivery)).size).toBe(received.length);
    expect(received.find((r) => r.kind === 'deployed')?.body.data).toMatchObject({ model: 'credit-risk', version: a.version });
  });

  it('one rejection ends the run even after an approval toward the quorum', async () => {
    const pipeline = await examplePipeline((s) => ({ ...s, approval: { mode: 'manual', reviewers: ['bob', 'carol'], quorum: 2, timeout: '10m' } }));
    const handle = await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' });
    const a = (await waitForStatus(handle, (s) => s.awaitingApproval !== undefined)).awaitingApproval!;
    const base = { model: 'credit-risk', version: a.version, sha256: a.sha256 };
    await decide(handle, 'approve', { ...base, reviewer: 'bob' });
    await decide(handle, 'reject', { ...base, reviewer: 'carol', comment: 'slice north regressed' });
    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Rejected);
    expect(end.message).toContain('slice north regressed');
  });

  it('reminders and escalation fire as durable timers; escalation lets the second group decide', async () => {
    const before = received.length;
    const pipeline = await examplePipeline((s) => ({
      ...s,
      // Escalation after 8 s: the refusal below must land before it, on a loaded machine too.
      approval: { mode: 'manual', reviewers: ['bob'], timeout: '40s', remindBefore: ['37s'], escalation: { after: '8s', groups: ['risk-leads'] } },
      notifications: { webhooks: [{ url: hookUrl, events: ['approval_reminder', 'approval_escalated'] }] },
    }));
    const handle = await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' });
    const a = (await waitForStatus(handle, (s) => s.awaitingApproval !== undefined)).awaitingApproval!;
    const base = { model: 'credit-risk', version: a.version, sha256: a.sha256 };
    // Before escalation a lead is not allowed.
    expect(await refusal(decide(handle, 'approve', { ...base, reviewer: 'lena', groups: ['risk-leads'] }))).toContain('may not decide');
    const escalated = await waitForStatus(handle, (s) => s.awaitingApproval?.escalated === true, 20_000);
    expect(escalated.awaitingApproval?.groups).toContain('risk-leads');
    const result = await decide(handle, 'approve', { ...base, reviewer: 'lena', groups: ['risk-leads'] });
    expect(result.decision).toBe('approved');
    expect((await waitForRun(handle)).outcome).toBe(RunOutcome.Deployed);
    for (let i = 0; i < 100 && received.slice(before).filter((r) => r.kind.startsWith('approval_')).length < 2; i++) await sleep(100);
    const kinds = received.slice(before).map((r) => r.kind);
    expect(kinds).toContain('approval_reminder');
    expect(kinds).toContain('approval_escalated');
    // Event filters hold: no approval_requested/deployed for this subscription.
    expect(kinds).not.toContain('deployed');
  });

  it('a receiver that fails is retried with backoff until it accepts, without holding up the run; the delivery id stays the same', async () => {
    const flakyUrl = hookUrl.replace('/hooks/conveyor', '/flaky');
    const pipeline = await examplePipeline((s) => ({ ...s, notifications: { webhooks: [{ url: flakyUrl, events: ['deployed'] }] } }));
    const end = await waitForRun(await startPipeline(env.client, env.config, pipeline));
    expect(end.outcome).toBe(RunOutcome.Deployed);
    // The run does not wait for the receiver; the delivery workflow retries (5 s, then 10 s) until it accepts.
    for (let i = 0; i < 400 && flakyAttempts.length < 3; i++) await sleep(100);
    expect(flakyAttempts).toHaveLength(3);
    expect(new Set(flakyAttempts).size).toBe(1);
    const delivered = received.filter((r) => r.delivery === flakyAttempts[0]);
    expect(delivered).toHaveLength(1);
    expect(delivered[0]!.valid).toBe(true);
  });

  it('expires with fewer approvals than the quorum; nothing deployed', async () => {
    const production = (await env.registry.getAlias('credit-risk', 'production'))?.version;
    const pipeline = await examplePipeline((s) => ({ ...s, approval: { mode: 'manual', reviewers: ['bob', 'carol'], quorum: 2, timeout: '8s' } }));
    const handle = await startPipeline(env.client, env.config, pipeline, { submittedBy: 'alice' });
    const a = (await waitForStatus(handle, (s) => s.awaitingApproval !== undefined)).awaitingApproval!;
    await decide(handle, 'approve', { model: 'credit-risk', version: a.version, sha256: a.sha256, reviewer: 'bob' });
    const end = await waitForRun(handle);
    expect(end.outcome).toBe(RunOutcome.Expired);
    expect(end.message).toContain('1 of 2 approvals');
    expect((await env.registry.getAlias('credit-risk', 'production'))?.version).toBe(production);
    expect(await env.registry.getDecision('credit-risk', a.version)).toMatchObject({ decision: 'expired', by: ['bob'] });
  });
});
