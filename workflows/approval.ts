/**
 * The state of one manual approval: who may decide, the approvals so far, and the
 * outcome. Pure (no SDK calls), so the workflow and unit tests share it.
 */
import type { ManualApproval } from '../src/spec/schema.js';
import type { AwaitingApproval, DecisionRequest, DecisionResult } from './messages.js';

export type Verdict = { kind: 'approved' | 'rejected'; by: string[]; comment: string | null };

export class ApprovalBallot {
  readonly awaiting: AwaitingApproval;
  private readonly escalationReviewers: string[];
  private readonly escalationGroups: string[];
  private readonly comments: string[] = [];
  verdict: Verdict | undefined;
  /** Set when the wait is over without a verdict (deadline, cancellation): later decisions are refused. */
  closed: string | undefined;

  constructor(
    policy: ManualApproval,
    candidate: { model: string; version: number; sha256: string },
    submittedBy: string,
    deadline: string,
  ) {
    // Histories recorded before quorum/groups existed carry none of these fields.
    this.awaiting = {
      ...candidate,
      reviewers: [...(policy.reviewers ?? [])],
      groups: [...(policy.groups ?? [])],
      quorum: policy.quorum ?? 1,
      approvals: [],
      escalated: false,
      submittedBy,
      deadline,
    };
    this.escalationReviewers = policy.escalation?.reviewers ?? [];
    this.escalationGroups = policy.escalation?.groups ?? [];
  }

  /** Ends the ballot without a verdict, before the workflow awaits anything else. */
  close(reason: string): void {
    this.closed ??= reason;
  }

  /** Adds the escalation reviewers and groups to those who may decide. */
  escalate(): void {
    if (this.awaiting.escalated) return;
    this.awaiting.escalated = true;
    this.awaiting.reviewers = [...new Set([...this.awaiting.reviewers, ...this.escalationReviewers])];
    this.awaiting.groups = [...new Set([...this.awaiting.groups, ...this.escalationGroups])];
  }

  /** Throws (refusing the update before it reaches history) unless `request` is a valid decision now. */
  validate(request: DecisionRequest, kind: 'approve' | 'reject', stage: string): void {
    const a = this.awaiting;
    if (this.verdict) throw new Error(`no decision is awaited: ${a.model}@${a.version} was already ${this.verdict.kind}`);
    if (this.closed) throw new Error(`no decision is awaited: ${a.model}@${a.version} ${this.closed}`);
    if (request.model !== a.model || request.version !== a.version) {
      throw new Error(`this run awaits a decision on ${a.model}@${a.version}, not ${request.model}@${request.version} (run is at stage "${stage}")`);
    }
    if (request.sha256 !== a.sha256) {
      throw new Error(`artifact hash ${String(request.sha256).slice(0, 12)}… does not match the candidate ${a.sha256.slice(0, 12)}…`);
    }
    const groups = request.groups ?? [];
    if (!a.reviewers.includes(request.reviewer) && !groups.some((g) => a.groups.includes(g))) {
      const who = [...a.reviewers, ...a.groups.map((g) => `group ${g}`)].join(', ');
      throw new Error(`"${request.reviewer}" may not decide ${a.model}@${a.version} (allowed: ${who})`);
    }
    if (request.reviewer === a.submittedBy) {
      throw new Error(`"${request.reviewer}" submitted this run and cannot decide it (four-eyes rule)`);
    }
    if (a.approvals.some((x) => x.reviewer === request.reviewer)) {
      throw new Error(
        kind === 'approve'
          ? `"${request.reviewer}" already approved ${a.model}@${a.version}; another reviewer must approve to reach the quorum of ${a.quorum}`
          : `"${request.reviewer}" already approved ${a.model}@${a.version}; a reviewer's decision cannot be reversed`,
      );
    }
    if (kind === 'reject' && !request.comment?.trim()) throw new Error('a rejection needs a comment');
  }

  record(request: DecisionRequest, kind: 'approve' | 'reject', at: string): DecisionResult {
    const a = this.awaiting;
    const comment = request.comment?.trim() || null;
    const base = { model: a.model, version: a.version, reviewer: request.reviewer, decidedAt: at, quorum: a.quorum };
    if (kind === 'reject') {
      this.verdict = { kind: 'rejected', by: [request.reviewer], comment };
      return { ...base, decision: 'rejected', approvals: a.approvals.length };
    }
    a.approvals.push({ reviewer: request.reviewer, at, comment });
    if (comment) this.comments.push(`${request.reviewer}: ${comment}`);
    if (a.approvals.length >= a.quorum) {
      this.verdict = { kind: 'approved', by: a.approvals.map((x) => x.reviewer), comment: this.comments.join('\n') || null };
      return { ...base, decision: 'approved', approvals: a.approvals.length };
    }
    return { ...base, decision: 'approval_recorded', approvals: a.approvals.length };
  }
}

/** Timer events during an approval wait, as absolute workflow times (ms). */
export interface ApprovalEvent {
  at: number;
  kind: 'approval_reminder' | 'approval_escalated';
}

export function approvalEvents(start: number, deadline: number, remindBeforeMs: number[], escalationAfterMs: number | null): ApprovalEvent[] {
  const events: ApprovalEvent[] = remindBeforeMs
    .map((ms) => ({ at: deadline - ms, kind: 'approval_reminder' as const }))
    .filter((e) => e.at > start);
  if (escalationAfterMs !== null && start + escalationAfterMs < deadline) events.push({ at: start + escalationAfterMs, kind: 'approval_escalated' });
  return events.sort((x, y) => x.at - y.at);
}
