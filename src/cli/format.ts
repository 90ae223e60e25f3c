import type { PipelineStatus } from '../../workflows/messages.js';
import { STAGES } from '../shared/constants.js';

const MARK: Record<string, string> = { pending: '·', running: '…', done: '✓', failed: '✗', skipped: '-' };

export function formatStatus(status: PipelineStatus): string {
  const lines = [`${status.model}: ${status.outcome}${status.version ? ` (version ${status.version})` : ''}`];
  for (const stage of STAGES) {
    const s = status.stages[stage];
    lines.push(`  ${MARK[s.state] ?? '?'} ${stage.padEnd(9)} ${s.detail ?? (s.state === 'running' ? 'running' : '')}`.trimEnd());
  }
  if (status.metrics) {
    const shown = Object.entries(status.metrics)
      .filter(([k, v]) => v !== null && k !== 'support')
      .map(([k, v]) => `${k}=${(v as number).toFixed(4)}`);
    lines.push(`  metrics: ${shown.join(' ')}`);
  }
  if (status.awaitingApproval) {
    const a = status.awaitingApproval;
    lines.push(`  awaiting approval of ${a.model}@${a.version} by one of: ${a.reviewers.join(', ')} (until ${a.deadline})`);
    lines.push(`  → npx conveyor approve ${a.model}@${a.version}    or    npx conveyor reject ${a.model}@${a.version} --comment "..."`);
  }
  if (status.error) lines.push(`  error: ${status.error}`);
  return lines.join('\n');
}

export function parseModelRef(ref: string): { model: string; version: number | undefined } {
  const match = /^([a-z0-9][a-z0-9_-]{0,62})(?:@(\d+))?$/.exec(ref);
  if (!match?.[1]) throw new Error(`"${ref}" is not a model reference; use <model> or <model>@<version>, e.g. credit-risk@3`);
  return { model: match[1], version: match[2] ? Number(match[2]) : undefined };
}
