import { describe, expect, it } from 'vitest';
import { ApprovalBallot, approvalEvents } from '../../workflows/approval.js';
import type { ManualApproval } from '../../src/spec/schema.js';

const candidate = { model: 'credit-risk', version: 4, sha256: 'a'.repeat(64) };
const policy = (p: Partial<ManualApproval> = {}): ManualApproval => ({ mode: 'manual', reviewers: ['bob', 'carol'], groups: [], quorum: 1, timeout: '1h', remindBefore: [], ...p });
const ballot = (p: Partial<ManualApproval> = {}) => new ApprovalBallot(policy(p), candidate, 'alice', '2026-01-01T01:00:00.000Z');
const req = (reviewer: string, extra: Record<string, unknown> = {}) => ({ ...candidate, reviewer, ...extra });

describe('ApprovalBallot', () => {
  it('refuses outsiders, the submitter, other versions and other artifacts', () => {
    const b = ballot({ reviewers: ['bob', 'alice'] });
    expect(() => b.validate(req('mallory'), 'approve', 'approve')).toThrow('may not decide');
    expect(() => b.validate(req('alice'), 'approve', 'approve')).toThrow('four-eyes');
    expect(() => b.validate(req('bob', { version: 3 }), 'approve', 'approve')).toThrow('credit-risk@4, not credit-risk@3');
    expect(() => b.validate(req('bob', { sha256: 'b'.repeat(64) }), 'approve', 'approve')).toThrow('does not match');
    expect(() => b.validate(req('bob'), 'reject', 'approve')).toThrow('needs a comment');
    expect(() => b.validate(req('bob'), 'approve', 'approve')).not.toThrow();
  });

  it('counts distinct approvals to the quorum; a reviewer cannot approve twice or reverse', () => {
    const b = ballot({ quorum: 2 });
    b.validate(req('bob'), 'approve', 'approve');
    expect(b.record(req('bob', { comment: 'ok' }), 'approve', 't1')).toMatchObject({ decision: 'approval_recorded', approvals: 1, quorum: 2 });
    expect(() => b.validate(req('bob'), 'approve', 'approve')).toThrow('already approved');
    expect(() => b.validate(req('bob', { comment: 'no' }), 'reject', 'approve')).toThrow('cannot be reversed');
    expect(b.record(req('carol'), 'approve', 't2')).toMatchObject({ decision: 'approved', approvals: 2 });
    expect(b.verdict).toEqual({ kind: 'approved', by: ['bob', 'carol'], comment: 'bob: ok' });
  });

  it('a rejection is final: later decisions are refused with a clear message', () => {
    const b = ballot({ quorum: 2 });
    b.record(req('bob'), 'approve', 't1');
    b.record(req('carol', { comment: 'slice north regressed' }), 'reject', 't2');
    expect(b.verdict).toMatchObject({ kind: 'rejected', by: ['carol'], comment: 'slice north regressed' });
    expect(() => b.validate(req('bob'), 'approve', 'approve')).toThrow('was already rejected');
  });

  it('a closed ballot (deadline passed) refuses decisions even from listed reviewers', () => {
    const b = ballot();
    b.close('expired at 2026-01-01T01:00:00.000Z');
    expect(() => b.validate(req('bob'), 'approve', 'approve')).toThrow('expired at 2026-01-01T01:00:00.000Z');
  });

  it('accepts group members, and escalation widens who may decide', () => {
    const b = ballot({ reviewers: [], groups: ['risk'], escalation: { after: '30m', reviewers: ['lena'], groups: ['leads'] } });
    expect(() => b.validate(req('bob', { groups: ['risk'] }), 'approve', 'approve')).not.toThrow();
    expect(() => b.validate(req('lena'), 'approve', 'approve')).toThrow('may not decide');
    expect(() => b.validate(req('zoe', { groups: ['leads'] }), 'approve', 'approve')).toThrow('may not decide');
    b.escalate();
    expect(b.awaiting.escalated).toBe(true);
    expect(() => b.validate(req('lena'), 'approve', 'approve')).not.toThrow();
    expect(() => b.validate(req('zoe', { groups: ['leads'] }), 'approve', 'approve')).not.toThrow();
  });

  it('tolerates policies recorded before groups and quorum existed', () => {
    const old = new ApprovalBallot({ mode: 'manual', reviewers: ['bob'], timeout: '1h' } as unknown as ManualApproval, candidate, 'alice', 'd');
    expect(old.awaiting).toMatchObject({ groups: [], quorum: 1 });
    expect(old.record(req('bob'), 'approve', 't')).toMatchObject({ decision: 'approved' });
  });
});

describe('approvalEvents', () => {
  it('orders reminders and escalation, dropping those before the start or after the deadline', () => {
    const start = 1_000_000;
    const deadline = start + 3_600_000;
    const events = approvalEvents(start, deadline, [1_800_000, 60_000, 7_200_000], 900_000);
    expect(events).toEqual([
      { at: start + 900_000, kind: 'approval_escalated' },
      { at: deadline - 1_800_000, kind: 'approval_reminder' },
      { at: deadline - 60_000, kind: 'approval_reminder' },
    ]);
    expect(approvalEvents(start, deadline, [], 4_000_000)).toEqual([]);
  });
});
