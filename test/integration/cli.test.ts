import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEnv, configEnv, testLogger, type TestEnv } from '../helpers/stack.js';
import { waitForStatus } from '../helpers/pipelines.js';

const run = promisify(execFile);

describe('the conveyor CLI against real servers', () => {
  let env: TestEnv;
  let cli: (args: string[], extraEnv?: NodeJS.ProcessEnv) => Promise<{ code: number; stdout: string; stderr: string }>;

  beforeAll(async () => {
    env = await startTestEnv('cli');
    cli = async (args, extraEnv = {}) => {
      try {
        const { stdout, stderr } = await run(process.execPath, [resolve('bin/conveyor.mjs'), ...args], {
          env: { ...process.env, ...configEnv(env.config), LOG_LEVEL: 'warn', ...extraEnv },
        });
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code: number; stdout: string; stderr: string };
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
      }
    };
  });
  afterAll(async () => env?.close());

  it('run --wait --json deploys and exits 0; models and status read it back', async () => {
    const result = await cli(['run', 'examples/credit-risk/pipeline.ts', '--wait', '--json']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const body = JSON.parse(result.stdout) as { outcome: string; workflowId: string; result: { version: number } };
    expect(body.outcome).toBe('deployed');
    expect(body.result.version).toBe(1);

    const models = JSON.parse((await cli(['models', '--json'])).stdout) as Array<{ model: string; production: number }>;
    expect(models).toEqual([{ model: 'credit-risk', versions: 1, latest: 1, production: 1 }]);
    const shown = JSON.parse((await cli(['models', 'show', 'credit-risk@1', '--json'])).stdout) as { artifact: { sha256: string }; decision: { decision: string } };
    expect(shown.artifact.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(shown.decision.decision).toBe('auto');
    const status = JSON.parse((await cli(['status', body.workflowId, '--json'])).stdout) as { outcome: string; temporalStatus: string };
    expect(status).toMatchObject({ outcome: 'deployed', temporalStatus: 'COMPLETED' });
  });

  it('an invalid pipeline file exits 2 and names every bad field', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'conveyor-cli-'));
    const file = join(dir, 'bad.ts');
    writeFileSync(
      file,
      `import { definePipeline } from 'conveyor';\nexport default definePipeline({ name: 'Bad', dataset: { source: 'x.txt' }, target: { column: 'y', task: 'classification' }, schema: { columns: { x: { type: 'float' } } }, trainer: { kind: 'command', command: ['t'] } } as never);\n`,
    );
    // Resolve 'conveyor' from this repository: the file lives outside it.
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module', dependencies: { conveyor: `file:${resolve('.')}` } }));
    const { symlinkSync, mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(resolve('.'), join(dir, 'node_modules', 'conveyor'));
    const result = await cli(['run', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('name: must be');
    expect(result.stderr).toContain('dataset.source: must end in .csv or .parquet');
    expect(result.stderr).toContain('target.column: "y" is not in schema.columns');
  });

  it('governance through the CLI: authenticated run, approvals list, four-eyes, approve, lineage, history and card', async () => {
    const { createDevTokens } = await import('../../src/auth/tokens.js');
    const { startApi } = await import('../../src/api/index.js');
    const { DEV_PEOPLE } = await import('../../src/dev/dev-env.js');
    const tokens = createDevTokens(env.config.home, DEV_PEOPLE);
    const api = await startApi({ ...env.config, api: { ...env.config.api, port: 0 } }, testLogger, { port: 0 });
    try {
      const as = (who: string) => ({ CONVEYOR_API_URL: api.url, CONVEYOR_TOKEN: tokens[who]! });
      const dir = mkdtempSync(join(tmpdir(), 'conveyor-cli-'));
      const file = join(dir, 'manual.ts');
      writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
      writeFileSync(
        file,
        `import base from '${resolve('examples/credit-risk/pipeline.ts')}';\nimport { definePipeline } from '${resolve('src/index.ts')}';\nexport default definePipeline({ ...base.spec, dataset: { source: '${resolve('examples/credit-risk/data/credit-risk.csv')}' }, trainer: { ...base.spec.trainer, command: ['{python}', '${resolve('examples/credit-risk/trainers/train_sklearn.py')}'] }, approval: { mode: 'manual', reviewers: ['alice'], groups: ['risk-reviewers'], timeout: '10m' } });\n`,
      );
      expect((await cli(['whoami'], as('bob'))).stdout).toContain('bob (groups: risk-reviewers)');
      const bad = await cli(['whoami'], { CONVEYOR_API_URL: api.url, CONVEYOR_TOKEN: 'x'.repeat(32) });
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('401');

      // alice submits through the API: the run's submitter is her authenticated identity.
      const started = JSON.parse((await cli(['run', file, '--api', '--json'], as('alice'))).stdout) as { workflowId: string };
      const handle = env.client.workflow.getHandle(started.workflowId);
      const status = await waitForStatus(handle, (s) => s.awaitingApproval !== undefined);
      expect(status.awaitingApproval?.submittedBy).toBe('alice');
      const ref = `credit-risk@${status.awaitingApproval!.version}`;

      const listed = await cli(['approvals'], as('bob'));
      expect(listed.stdout).toContain(ref);
      expect(listed.stdout).toContain('roc_auc');
      expect((await cli(['approvals'], as('alice'))).stdout).toContain('nothing awaits your decision');

      const self = await cli(['approve', ref], as('alice'));
      expect(self.code).toBe(1);
      // alice is a listed reviewer, so only the four-eyes rule stops her deciding her own run.
      expect(self.stderr).toContain('four-eyes');
      const noComment = await cli(['reject', ref], as('bob'));
      expect(noComment.code).toBe(1);
      expect(noComment.stderr).toContain('--comment');

      const ok = await cli(['approve', ref, '--comment', 'ship it'], as('bob'));
      expect(ok.stdout).toContain('deciding as bob');
      expect(ok.stdout).toContain(`approved: ${ref} by bob`);
      expect((await handle.result()).outcome).toBe('deployed');

      const lineage = await cli(['lineage', ref]);
      expect(lineage.code).toBe(0);
      for (const part of ['sha256', 'alice', 'bob', 'ship it', 'production']) expect(lineage.stdout).toContain(part);
      const history = JSON.parse((await cli(['models', 'history', 'credit-risk', '--json'])).stdout) as { timeline: Array<{ version: number }> };
      expect(history.timeline.map((t) => t.version)).toEqual([1, status.awaitingApproval!.version]);
      const card = await cli(['models', 'card', ref]);
      expect(card.stdout).toContain('| roc_auc |');
    } finally {
      await api.close();
    }
  });
});
