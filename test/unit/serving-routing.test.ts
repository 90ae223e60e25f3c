import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { sha256Hex } from '../../src/eval/onnx-model.js';
import type { ThreadedModel } from '../../src/eval/threaded-model.js';
import { createLogger, type Logger } from '../../src/logger.js';
import { Registry, TrafficOwnedError } from '../../src/registry/registry.js';
import { ModelHost, type ServedModel } from '../../src/serving/model-host.js';
import type { PredictionRecord } from '../../src/serving/prediction-log.js';
import { buildServing, bucket, ROUTING_KEY_HEADER, type Serving, type ServingOptions } from '../../src/serving/server.js';
import type { ModelVersionRecord, TrafficMode, TrafficRecord } from '../../src/shared/registry-types.js';
import { keys } from '../../src/store/keys.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';
import { creditRows, deployFixtureModel, FIXTURE_METADATA_BYTES, FIXTURE_MODEL_BYTES, FIXTURE_MODEL_SHA, fixtureVersionDraft } from '../helpers/fixture-model.js';

const MODEL = 'credit-risk';
const TOKEN = 'a-long-enough-test-token-123';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/models/${name}`, import.meta.url));
const ERRORING_BYTES = readFileSync(fixture('bad/credit-erroring.onnx'));
const SLOW_BYTES = readFileSync(fixture('bad/credit-slow.onnx'));

// Rows from examples/credit-risk/data/credit-risk.csv
const ROWS = [
  { age: 78, income: 45729.94, loan_amount: 5152.29, loan_term_months: 12, credit_score: 768, employment_years: 8.7, num_open_accounts: 4, debt_to_income: 0.247, home_ownership: 'OWN', purpose: 'credit_card', region: 'east' },
  { age: 26, income: 42580.78, loan_amount: 20459.04, loan_term_months: 48, credit_score: 611, employment_years: 5.8, num_open_accounts: 1, debt_to_income: 0.37, home_ownership: 'RENT', purpose: 'debt_consolidation', region: 'north' },
];
const ROW = ROWS[0]!;

interface PredictResponse {
  requestId: string;
  model: string;
  version: number;
  arm: string;
  sha256: string;
  rolloutId?: string;
  predictions: Array<{ label: number; probabilities: Record<string, number> }>;
  latencyMs: number;
}

interface LogLine {
  level: number;
  msg: string;
  model?: string;
  version?: number;
  err?: string;
}

const quiet = createLogger({ level: 'silent', pretty: false });

let store: MemoryArtifactStore;
let registry: Registry;
let logs: LogLine[];
let logger: Logger;
let host: ModelHost;
const apps: Serving[] = [];
const extraHosts: ModelHost[] = [];

beforeEach(async () => {
  store = new MemoryArtifactStore();
  registry = new Registry(store);
  logs = [];
  logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  host = new ModelHost(registry, store, logger);
  await deployFixtureModel(store, registry, MODEL);
});

afterEach(async () => {
  for (const s of apps.splice(0)) await s.app.close();
  await host.close();
  for (const h of extraHosts.splice(0)) await h.close();
});

/** Stores `blob` (+ the shared metadata) and registers it as the next version of MODEL, claiming `claimedSha`. */
async function registerCandidate(run: string, blob: Buffer, claimedSha = sha256Hex(blob)): Promise<ModelVersionRecord> {
  const metadataKey = keys.modelMetadata(sha256Hex(FIXTURE_METADATA_BYTES));
  const blobKey = keys.modelBlob(claimedSha);
  await store.put(blobKey, blob);
  await store.put(metadataKey, FIXTURE_METADATA_BYTES);
  return registry.registerVersion(fixtureVersionDraft({ model: MODEL, artifact: { sha256: claimedSha, key: blobKey, size: blob.length, metadataKey }, run }));
}

async function setSplit(mode: TrafficMode, candidate: ModelVersionRecord | null, percent: number, rolloutId: string | null, step: string): Promise<TrafficRecord> {
  return registry.setTraffic({
    model: MODEL,
    mode,
    candidate: candidate ? { version: candidate.version, sha256: candidate.artifact.sha256 } : null,
    percent,
    rolloutId,
    step,
    workflowId: rolloutId ? `wf-${rolloutId}` : null,
  });
}

function start(opts: Partial<ServingOptions> = {}): Serving {
  const s = buildServing({ host, logger: quiet, tokens: [TOKEN], store, predictionLog: { flushRows: 100_000, flushIntervalMs: 600_000 }, ...opts });
  apps.push(s);
  return s;
}

async function predict(s: Serving, payload: unknown, headers: Record<string, string> = {}) {
  return s.app.inject({ method: 'POST', url: `/v1/models/${MODEL}:predict`, headers: { ...AUTH, ...headers }, payload: payload as Record<string, unknown> });
}

async function loggedRows(s: Serving): Promise<PredictionRecord[]> {
  await s.predictionLog!.flush();
  const rows: PredictionRecord[] = [];
  for (const key of await store.list('predictions/')) {
    rows.push(...(await store.get(key)).toString('utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as PredictionRecord));
  }
  return rows;
}

/** Flushes and re-reads the log until `done` holds; bounded by attempts, not by a time budget. */
async function waitForRows(s: Serving, done: (rows: PredictionRecord[]) => boolean): Promise<PredictionRecord[]> {
  for (let i = 0; i < 1000; i++) {
    const rows = await loggedRows(s);
    if (done(rows)) return rows;
    await sleep(10);
  }
  throw new Error('the expected prediction log rows never appeared');
}

async function metricsText(s: Serving): Promise<string> {
  const res = await s.app.inject({ method: 'GET', url: '/metrics', headers: AUTH });
  expect(res.statusCode).toBe(200);
  return res.body;
}

function metricValue(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Polls until the session is released (bounded by attempts). */
async function waitReleased(served: ServedModel): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const err = await served.loaded.predict(ROWS).then(
      () => null,
      (e: unknown) => e as Error,
    );
    if (err) {
      expect(err.message).toBe('model has been released');
      return;
    }
    await sleep(10);
  }
  throw new Error('session was never released');
}

/** Runs `send` for 0..count-1, `width` at a time. */
async function inBatches<T>(count: number, width: number, send: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < count; i += width) out.push(...(await Promise.all(Array.from({ length: Math.min(width, count - i) }, (_, j) => send(i + j)))));
  return out;
}

describe('bucket', () => {
  it('is deterministic, in [0, 10000), differs between rollout ids and is about uniform', () => {
    expect(bucket('ro-1', 'user-42')).toBe(bucket('ro-1', 'user-42'));
    const a = Array.from({ length: 10_000 }, (_, i) => bucket('ro-1', `k${i}`));
    const b = Array.from({ length: 10_000 }, (_, i) => bucket('ro-2', `k${i}`));
    expect(Array.from({ length: 10_000 }, (_, i) => bucket('ro-1', `k${i}`))).toEqual(a);
    for (const x of [...a, ...b]) {
      expect(Number.isInteger(x)).toBe(true);
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(10_000);
    }
    // A new rollout reshuffles: few keys keep their bucket, and a 30% canary picks a different set.
    expect(a.filter((x, i) => x === b[i]).length).toBeLessThan(50);
    const inA = a.map((x) => x < 3000);
    const inB = b.map((x) => x < 3000);
    const both = inA.filter((x, i) => x && inB[i]).length;
    expect(both).toBeGreaterThan(600); // ~ 0.3 * 0.3 * 10 000 = 900 if independent
    expect(both).toBeLessThan(1200);
    for (const buckets of [a, b]) {
      const deciles = new Array<number>(10).fill(0);
      for (const x of buckets) deciles[Math.floor(x / 1000)]!++;
      for (const n of deciles) {
        expect(n).toBeGreaterThanOrEqual(800);
        expect(n).toBeLessThanOrEqual(1200);
      }
    }
  });
});

describe('traffic routing', () => {
  it('canary 30%: sticky per key (body or header), about 30% to the candidate, candidate answers name version, arm and rollout', async () => {
    const v2 = await registerCandidate('c2', FIXTURE_MODEL_BYTES);
    await setSplit('canary', v2, 30, 'ro-canary', 'canary-30');
    await host.refresh();
    expect(host.list()).toEqual([
      { model: MODEL, version: 1, sha256: FIXTURE_MODEL_SHA, loadedAt: expect.any(String), traffic: { mode: 'canary', version: 2, percent: 30, rolloutId: 'ro-canary' } },
    ]);
    const s = start();

    const keysSent = Array.from({ length: 1000 }, (_, i) => `k${i}`);
    const viaBody = await inBatches(1000, 50, async (i) => predict(s, { key: keysSent[i], instance: ROW }));
    const viaHeader = await inBatches(1000, 50, async (i) => predict(s, { instance: ROW }, { [ROUTING_KEY_HEADER]: keysSent[i]! }));
    let canary = 0;
    for (let i = 0; i < 1000; i++) {
      expect(viaBody[i]!.statusCode).toBe(200);
      expect(viaHeader[i]!.statusCode).toBe(200);
      const body = viaBody[i]!.json() as PredictResponse;
      const header = viaHeader[i]!.json() as PredictResponse;
      const expected = bucket('ro-canary', keysSent[i]!) < 3000 ? 'canary' : 'production';
      expect(body.arm).toBe(expected);
      expect(header.arm).toBe(body.arm);
      expect(header.version).toBe(body.version);
      for (const r of [body, header]) {
        if (r.arm === 'canary') {
          expect(r).toMatchObject({ model: MODEL, version: 2, arm: 'canary', rolloutId: 'ro-canary', sha256: FIXTURE_MODEL_SHA });
        } else {
          expect(r).toMatchObject({ model: MODEL, version: 1, arm: 'production', sha256: FIXTURE_MODEL_SHA });
          expect('rolloutId' in r).toBe(false);
        }
        expect(r.predictions).toHaveLength(1);
      }
      if (body.arm === 'canary') canary++;
    }
    expect(canary / 1000).toBeGreaterThanOrEqual(0.25);
    expect(canary / 1000).toBeLessThanOrEqual(0.35);

    // The body's key wins over the header's.
    const toCanary = keysSent.find((k) => bucket('ro-canary', k) < 3000)!;
    const toProduction = keysSent.find((k) => bucket('ro-canary', k) >= 3000)!;
    const bodyWins = (await predict(s, { key: toCanary, instance: ROW }, { [ROUTING_KEY_HEADER]: toProduction })).json() as PredictResponse;
    expect(bodyWins.arm).toBe('canary');
    const bodyWins2 = (await predict(s, { key: toProduction, instance: ROW }, { [ROUTING_KEY_HEADER]: toCanary })).json() as PredictResponse;
    expect(bodyWins2.arm).toBe('production');

    const text = await metricsText(s);
    expect(metricValue(text, 'conveyor_predictions_total{model="credit-risk",version="2",arm="canary"}')).toBe(2 * canary + 1);
    expect(metricValue(text, 'conveyor_predictions_total{model="credit-risk",version="1",arm="production"}')).toBe(2 * (1000 - canary) + 1);

    // The log records each row's arm, version and rollout.
    const rows = await loggedRows(s);
    expect(rows).toHaveLength(2002);
    const byRequest = new Map(viaBody.map((r) => [(r.json() as PredictResponse).requestId, r.json() as PredictResponse]));
    for (const row of rows) {
      const answer = byRequest.get(row.requestId);
      if (!answer) continue;
      expect(row).toMatchObject({ arm: answer.arm, version: answer.version, rolloutId: 'ro-canary', rowIndex: 0, output: answer.predictions[0] });
    }
  });

  it('A/B split: the candidate arm is "challenger", sticky per key', async () => {
    const v2 = await registerCandidate('c2', FIXTURE_MODEL_BYTES);
    await setSplit('ab', v2, 50, 'ro-ab', 'ab-50');
    await host.refresh();
    const s = start();
    const arms = new Map<string, number>();
    for (let i = 0; i < 200; i++) {
      const key = `user-${i}`;
      const first = (await predict(s, { key, instances: ROWS })).json() as PredictResponse;
      const second = (await predict(s, { instance: ROW }, { [ROUTING_KEY_HEADER]: key })).json() as PredictResponse;
      const expected = bucket('ro-ab', key) < 5000 ? 'challenger' : 'production';
      expect(first.arm).toBe(expected);
      expect(second.arm).toBe(expected);
      if (expected === 'challenger') expect(first).toMatchObject({ version: 2, rolloutId: 'ro-ab' });
      else {
        expect(first.version).toBe(1);
        expect('rolloutId' in first).toBe(false);
      }
      expect(first.predictions).toHaveLength(2);
      arms.set(first.arm, (arms.get(first.arm) ?? 0) + 1);
    }
    expect([...arms.keys()].sort()).toEqual(['challenger', 'production']);
    expect(arms.get('challenger')!).toBeGreaterThan(70);
    expect(arms.get('challenger')!).toBeLessThan(130);
    expect(arms.has('canary')).toBe(false);
  });

  it('a failing candidate request is answered by production and logged as an error row of the candidate arm', async () => {
    const v2 = await registerCandidate('c2', ERRORING_BYTES);
    await setSplit('canary', v2, 100, 'ro-err', 'canary-100');
    await host.refresh();
    expect(host.route(MODEL)?.split?.candidate.version).toBe(2);
    const s = start();

    const ok = (await predict(s, { key: 'a', instance: ROW })).json() as PredictResponse;
    expect(ok).toMatchObject({ version: 2, arm: 'canary', rolloutId: 'ro-err' });

    const old = { ...ROW, age: 150 };
    const res = await predict(s, { key: 'b', instance: old });
    expect(res.statusCode).toBe(200);
    const body = res.json() as PredictResponse;
    expect(body).toMatchObject({ model: MODEL, version: 1, arm: 'production', sha256: FIXTURE_MODEL_SHA });
    expect('rolloutId' in body).toBe(false);
    expect(body.predictions).toHaveLength(1);
    expect([0, 1]).toContain(body.predictions[0]!.label);

    const rows = (await loggedRows(s)).filter((r) => r.requestId === body.requestId);
    expect(rows).toHaveLength(2);
    const failed = rows.find((r) => r.arm === 'canary');
    const answered = rows.find((r) => r.arm === 'production');
    expect(failed).toMatchObject({ model: MODEL, version: 2, sha256: sha256Hex(ERRORING_BYTES), rolloutId: 'ro-err', rowIndex: 0, features: old, output: null });
    expect(failed!.error).toMatch(/out of data bounds/);
    expect(answered).toMatchObject({ model: MODEL, version: 1, sha256: FIXTURE_MODEL_SHA, rowIndex: 0, features: old, output: body.predictions[0] });
    expect(answered!.error).toBeUndefined();

    const text = await metricsText(s);
    expect(metricValue(text, 'conveyor_inference_failures_total{model="credit-risk",version="2",arm="canary"}')).toBe(1);
    expect(text).not.toContain('conveyor_inference_failures_total{model="credit-risk",version="1"');
    expect(text).not.toContain('reason="internal"');
    expect(metricValue(text, 'conveyor_predictions_total{model="credit-risk",version="1",arm="production"}')).toBe(1);
    expect(metricValue(text, 'conveyor_predictions_total{model="credit-risk",version="2",arm="canary"}')).toBe(1);

    // The candidate session stays usable after a failure.
    expect(((await predict(s, { key: 'c', instance: ROWS[1] })).json() as PredictResponse).arm).toBe('canary');
  });

  it('shadow: callers get exactly the production answer; copies are scored afterwards and logged as arm "shadow"', async () => {
    // The reference: an app serving production only, from its own store.
    const refStore = new MemoryArtifactStore();
    const refRegistry = new Registry(refStore);
    await deployFixtureModel(refStore, refRegistry, MODEL);
    const refHost = new ModelHost(refRegistry, refStore, quiet);
    extraHosts.push(refHost);
    await refHost.refresh();
    const ref = buildServing({ host: refHost, logger: quiet, tokens: [TOKEN] });
    apps.push(ref);

    const v2 = await registerCandidate('c2', SLOW_BYTES);
    await setSplit('shadow', v2, 100, 'ro-shadow', 'shadow');
    await host.refresh();
    const s = start();

    const payloads = [{ instances: ROWS }, { instance: ROWS[0] }, { key: 'x', instance: ROWS[1] }, { instances: [ROWS[1], ROWS[0]] }];
    const answers: PredictResponse[] = [];
    for (const payload of payloads) {
      const res = await predict(s, payload);
      expect(res.statusCode).toBe(200);
      const body = res.json() as PredictResponse;
      const expected = (await predict(ref, payload)).json() as PredictResponse;
      expect(body).toMatchObject({ model: MODEL, version: 1, arm: 'production', sha256: FIXTURE_MODEL_SHA });
      expect('rolloutId' in body).toBe(false);
      expect(body.predictions).toEqual(expected.predictions);
      answers.push(body);
    }
    const rowCount = 2 + 1 + 1 + 2;

    const rows = await waitForRows(s, (r) => r.filter((x) => x.arm === 'shadow').length >= rowCount);
    const production = rows.filter((r) => r.arm === 'production');
    const shadow = rows.filter((r) => r.arm === 'shadow');
    expect(production).toHaveLength(rowCount);
    expect(shadow).toHaveLength(rowCount);
    const id = (r: PredictionRecord): string => `${r.requestId}#${r.rowIndex}`;
    expect(shadow.map(id).sort()).toEqual(production.map(id).sort());
    expect(new Set(shadow.map((r) => r.requestId))).toEqual(new Set(answers.map((a) => a.requestId)));
    for (const row of shadow) {
      expect(row).toMatchObject({ model: MODEL, version: 2, sha256: sha256Hex(SLOW_BYTES), rolloutId: 'ro-shadow' });
      expect(row.error).toBeUndefined();
      const twin = production.find((p) => id(p) === id(row))!;
      // The copy's features are its production twin's, stored there only.
      expect(twin.features).toEqual(expect.objectContaining({ age: expect.any(Number) }));
      expect(row.features).toBeNull();
      // credit-slow gives credit-sklearn's answers bit for bit at the same batch size.
      expect(row.output).toEqual(twin.output);
    }
    for (const row of production) expect(row).toMatchObject({ version: 1, rolloutId: 'ro-shadow' });

    const text = await metricsText(s);
    expect(metricValue(text, 'conveyor_predictions_total{model="credit-risk",version="2",arm="shadow"}')).toBe(rowCount);
    expect(metricValue(text, 'conveyor_predictions_total{model="credit-risk",version="1",arm="production"}')).toBe(rowCount);
    expect(metricValue(text, 'conveyor_shadow_skipped_total{model="credit-risk"}')).toBeUndefined();
    // Every copy gave its hold on the candidate back.
    expect(host.route(MODEL)!.split!.candidate.inFlight).toBe(0);
  });

  it('a shadow thread that dies: its copies are skipped (not held against the candidate), the version is loaded again, copies are scored again', async () => {
    const v2 = await registerCandidate('c2', SLOW_BYTES);
    await setSplit('shadow', v2, 100, 'ro-dead', 'shadow');
    await host.refresh();
    const s = start();
    const first = host.route(MODEL)!.split!.candidate;
    await (first.loaded as ThreadedModel).thread.terminate();
    expect(first.loaded.failure?.()).toBeInstanceOf(Error);

    // Answered by production; the copy cannot be scored and is counted as skipped.
    const res = await predict(s, { instance: ROW });
    expect(res.statusCode).toBe(200);
    let reloaded: ServedModel | undefined;
    for (let i = 0; i < 500 && !reloaded; i++) {
      const candidate = host.route(MODEL)?.split?.candidate;
      if (candidate && candidate !== first) reloaded = candidate;
      else await sleep(10);
    }
    expect(reloaded).toBeDefined();
    expect(reloaded!.loaded.failure?.()).toBeUndefined();
    expect(metricValue(await metricsText(s), 'conveyor_shadow_skipped_total{model="credit-risk"}')).toBe(1);
    expect(metricValue(await metricsText(s), 'conveyor_inference_failures_total{model="credit-risk",version="2",arm="shadow"}') ?? 0).toBe(0);
    expect(logs.some((l) => l.msg === 'inference thread died; loading the version again')).toBe(true);

    const after = (await predict(s, { instance: ROW })).json() as PredictResponse;
    const rows = await waitForRows(s, (r) => r.some((x) => x.arm === 'shadow'));
    expect(rows.filter((r) => r.arm === 'shadow').map((r) => [r.requestId, r.error])).toEqual([[after.requestId, undefined]]);
  });

  it('closing scores the shadow copies still waiting for their batch, and the last flush logs them', async () => {
    const v2 = await registerCandidate('c2', SLOW_BYTES);
    await setSplit('shadow', v2, 100, 'ro-close', 'shadow');
    await host.refresh();
    // A batch that would wait a minute for more copies: only closing runs it.
    const s = start({ shadowBatchDelayMs: 60_000 });
    const ids: string[] = [];
    for (const payload of [{ instance: ROWS[0] }, { instances: ROWS }, { instance: ROWS[1] }]) {
      const res = await predict(s, payload);
      expect(res.statusCode).toBe(200);
      ids.push((res.json() as PredictResponse).requestId);
    }
    await sleep(20);
    expect((await loggedRows(s)).filter((r) => r.arm === 'shadow')).toEqual([]);

    apps.splice(apps.indexOf(s), 1);
    await s.app.close();
    const rows = await loggedRows(s);
    const shadow = rows.filter((r) => r.arm === 'shadow');
    expect(shadow.map((r) => `${r.requestId}/${r.rowIndex}`).sort()).toEqual([`${ids[0]}/0`, `${ids[1]}/0`, `${ids[1]}/1`, `${ids[2]}/0`].sort());
    for (const row of shadow) expect(row).toMatchObject({ version: 2, rolloutId: 'ro-close', features: null, output: expect.objectContaining({ label: expect.anything() }) });
    expect(s.predictionLog!.pending).toBe(0);
  });

  it('closing gives up on copies still being scored after shadowCloseWaitMs: they finish later, counted as skipped, never logged', async () => {
    const v2 = await registerCandidate('c2', SLOW_BYTES);
    await setSplit('shadow', v2, 100, 'ro-late', 'shadow');
    await host.refresh();
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
    // Each run of the slow candidate takes ~30 ms; closing waits 1 ms for it.
    const s = start({ logger, shadowBatchDelayMs: 0, shadowCloseWaitMs: 1 });
    const res = await predict(s, { instance: ROW });
    expect(res.statusCode).toBe(200);
    apps.splice(apps.indexOf(s), 1);
    await s.app.close();
    expect(warnings).toContain('closing with shadow copies not yet scored; they are not logged (counted as skipped when they finish)');
    const candidate = host.route(MODEL)!.split!.candidate;
    for (let i = 0; i < 500 && candidate.inFlight > 0; i++) await sleep(10);
    expect(candidate.inFlight).toBe(0);
    const skipped = await s.metrics.registry.getSingleMetricAsString('conveyor_shadow_skipped_total');
    expect(skipped).toContain('conveyor_shadow_skipped_total{model="credit-risk"} 1');
    expect(s.predictionLog!.pending).toBe(0);
    const rows = await loggedRows(s);
    expect(rows.filter((r) => r.arm === 'production')).toHaveLength(1);
    expect(rows.filter((r) => r.arm === 'shadow')).toEqual([]);
  });

  it('without a prediction log, closing still runs waiting shadow copies at once, so the candidate session is not held', async () => {
    const v2 = await registerCandidate('c2', SLOW_BYTES);
    await setSplit('shadow', v2, 100, 'ro-nolog', 'shadow');
    await host.refresh();
    const s = start({ store: undefined, shadowBatchDelayMs: 60_000 });
    expect(s.predictionLog).toBeUndefined();
    expect((await predict(s, { instance: ROW })).statusCode).toBe(200);
    const candidate = host.route(MODEL)!.split!.candidate;
    expect(candidate.inFlight).toBe(1);
    apps.splice(apps.indexOf(s), 1);
    await s.app.close();
    expect(candidate.inFlight).toBe(0);
  });

  it('shadow copies past maxShadowInFlight are skipped and counted, never failing a request', async () => {
    const v2 = await registerCandidate('c2', SLOW_BYTES);
    await setSplit('shadow', v2, 100, 'ro-shadow', 'shadow');
    await host.refresh();
    const s = start({ maxShadowInFlight: 1 });

    const burst = 20;
    const responses = await Promise.all(Array.from({ length: burst }, (_, i) => predict(s, { key: `b${i}`, instance: ROWS[i % 2] })));
    for (const res of responses) {
      expect(res.statusCode).toBe(200);
      expect((res.json() as PredictResponse).arm).toBe('production');
    }
    const skipped = metricValue(await metricsText(s), 'conveyor_shadow_skipped_total{model="credit-risk"}') ?? 0;
    expect(skipped).toBeGreaterThan(0);
    expect(skipped).toBeLessThan(burst);

    // Every copy is either scored or skipped, none queued.
    let rows = await waitForRows(s, (r) => r.filter((x) => x.arm === 'shadow').length >= burst - skipped);
    expect(rows.filter((r) => r.arm === 'shadow')).toHaveLength(burst - skipped);
    expect(rows.filter((r) => r.arm === 'production')).toHaveLength(burst);
    expect(rows.filter((r) => r.error !== undefined)).toEqual([]);
    await sleep(100);
    expect((await loggedRows(s)).filter((r) => r.arm === 'shadow')).toHaveLength(burst - skipped);

    // Once the shadow in flight is done, the next request's copy is scored again.
    const after = (await predict(s, { instance: ROW })).json() as PredictResponse;
    rows = await waitForRows(s, (r) => r.some((x) => x.arm === 'shadow' && x.requestId === after.requestId));
    expect(metricValue(await metricsText(s), 'conveyor_shadow_skipped_total{model="credit-risk"}')).toBe(skipped);
    expect(rows.filter((r) => r.arm === 'shadow')).toHaveLength(burst - skipped + 1);
  });
});

describe('dynamic batching', () => {
  const batchRuns = (text: string, version: number, arm = 'served'): { runs: number; requests: number; alone: number } => ({
    runs: metricValue(text, `conveyor_inference_batch_requests_count{model="${MODEL}",version="${version}",arm="${arm}"}`) ?? 0,
    requests: metricValue(text, `conveyor_inference_batch_requests_sum{model="${MODEL}",version="${version}",arm="${arm}"}`) ?? 0,
    alone: metricValue(text, `conveyor_inference_batch_requests_bucket{le="1",model="${MODEL}",version="${version}",arm="${arm}"}`) ?? 0,
  });

  it('concurrent requests share inference runs; each gets the answer its rows get alone, and its own log rows', async () => {
    await host.refresh();
    const batched = start();
    const unbatched = start({ maxBatchRows: 1 });
    const rows = creditRows(40, 5);
    const payloads = rows.map((row, i) => (i % 4 === 3 ? { instances: [row, rows[(i + 1) % rows.length]] } : { instance: row }));
    const [viaBatches, alone] = await Promise.all([Promise.all(payloads.map((p) => predict(batched, p))), Promise.all(payloads.map((p) => predict(unbatched, p)))]);

    const b = batchRuns(await metricsText(batched), 1);
    expect(b.requests).toBe(40);
    expect(b.runs).toBeLessThan(40);
    const u = batchRuns(await metricsText(unbatched), 1);
    expect(u).toEqual({ runs: 40, requests: 40, alone: 40 });

    for (const [i, res] of viaBatches.entries()) {
      expect(res.statusCode).toBe(200);
      const got = res.json() as PredictResponse;
      const want = alone[i]!.json() as PredictResponse;
      expect(got).toMatchObject({ model: MODEL, version: 1, arm: 'production' });
      expect(got.predictions).toHaveLength(want.predictions.length);
      for (const [j, p] of got.predictions.entries()) {
        const q = want.predictions[j]!;
        expect(p.label).toBe(q.label);
        expect(Object.keys(p.probabilities)).toEqual(Object.keys(q.probabilities));
        for (const c of Object.keys(q.probabilities)) expect(Math.abs(p.probabilities[c]! - q.probabilities[c]!)).toBeLessThan(1e-6);
      }
    }

    // The log has each request's own features and outputs, row by row.
    const logged = (await loggedRows(batched)).filter((r) => r.arm === 'production');
    expect(logged).toHaveLength(50);
    for (const [i, res] of viaBatches.entries()) {
      const body = res.json() as PredictResponse;
      const mine = logged.filter((r) => r.requestId === body.requestId).sort((x, y) => x.rowIndex - y.rowIndex);
      const sent = 'instances' in payloads[i]! ? payloads[i]!.instances : [payloads[i]!.instance];
      expect(mine.map((r) => r.features)).toEqual(sent);
      expect(mine.map((r) => r.output)).toEqual(body.predictions);
    }
  });

  it('a candidate that fails on some rows fails only the requests that sent them: the others in its batch are answered by it', async () => {
    const v2 = await registerCandidate('c2', ERRORING_BYTES);
    await setSplit('canary', v2, 100, 'ro-batch', 'canary-100');
    await host.refresh();
    const s = start();
    // The erroring candidate fails any run with a row of age > 100.
    const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => predict(s, { key: `k${i}`, instance: i % 2 === 0 ? ROW : { ...ROW, age: 150 } })));
    for (const [i, res] of responses.entries()) {
      expect(res.statusCode).toBe(200);
      expect((res.json() as PredictResponse).arm).toBe(i % 2 === 0 ? 'canary' : 'production');
    }
    const text = await metricsText(s);
    expect(metricValue(text, `conveyor_inference_failures_total{model="${MODEL}",version="2",arm="canary"}`)).toBe(10);
    expect(metricValue(text, `conveyor_predictions_total{model="${MODEL}",version="2",arm="canary"}`)).toBe(10);
    // The candidate's first run held all 20 and failed; each was then run alone.
    const runs = batchRuns(text, 2);
    expect(runs.runs).toBeGreaterThan(20);
    expect(runs.alone).toBe(20);
  });

  it('refuses batching and shadow settings that make no sense before building anything, naming them', () => {
    expect(() => start({ maxBatchRows: 0 })).toThrow(/maxBatchRows must be an integer from 1 to 100000 \(1 turns dynamic batching off\), got 0/);
    expect(() => start({ maxBatchRows: 1.5 })).toThrow(/maxBatchRows .* got 1.5/);
    expect(() => start({ shadowBatchRows: 0 })).toThrow(/shadowBatchRows must be an integer from 1 to 100000/);
    expect(() => start({ maxShadowInFlight: Number.NaN })).toThrow(/maxShadowInFlight must be a positive integer, got NaN/);
    expect(() => start({ shadowBatchDelayMs: -1 })).toThrow(/shadowBatchDelayMs must be from 0 to 60000, got -1/);
  });
});

describe('malformed requests', () => {
  const { credit_score: _dropped, ...missingScore } = ROW;
  it.each([
    ['missing feature', { instances: [ROW, missingScore] }, 'credit_score', 'row 1, field "credit_score": missing feature'],
    ['unknown feature', { instance: { ...ROW, colour: 'red' } }, 'colour', 'row 0, field "colour": unknown feature'],
    ['wrong type', { instance: { ...ROW, age: 'old' } }, 'age', 'row 0, field "age": expected a number, got non-numeric string "old"'],
    ['wrong type (boolean for a number)', { instances: [{ ...ROW, income: true }] }, 'income', 'row 0, field "income": expected a number, got boolean'],
  ])('%s: 400 naming the field, before any arm runs', async (_case, payload, field, message) => {
    const v2 = await registerCandidate('c2', ERRORING_BYTES);
    await setSplit('canary', v2, 100, 'ro-400', 'canary-100');
    await host.refresh();
    const s = start();
    const res = await predict(s, payload, { [ROUTING_KEY_HEADER]: 'someone' });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ error: message, field });
    expect(await loggedRows(s)).toEqual([]);
    const text = await metricsText(s);
    expect(metricValue(text, 'conveyor_prediction_errors_total{model="credit-risk",reason="bad_request"}')).toBe(1);
    expect(text).not.toContain('conveyor_inference_failures_total{');
    expect(text).not.toContain('conveyor_predictions_total{');
  });

  it.each([
    ['instances not an array', { instances: ROW }, /^instances: /],
    ['both instance and instances', { instance: ROW, instances: [ROW] }, /"instance" or "instances"/],
    ['neither instance nor instances', { key: 'k' }, /"instance" or "instances"/],
    ['unknown body field', { instance: ROW, extra: 1 }, /extra/],
  ])('%s: 400 naming the field, no session used', async (_case, payload, error) => {
    const v2 = await registerCandidate('c2', SLOW_BYTES);
    await setSplit('shadow', v2, 100, 'ro-400', 'shadow');
    await host.refresh();
    const s = start();
    const used = vi.spyOn(host, 'useSession');
    const res = await predict(s, payload);
    expect(res.statusCode).toBe(400);
    expect((res.json() as { error: string }).error).toMatch(error);
    expect(used).not.toHaveBeenCalled();
    used.mockRestore();
    await sleep(20); // any (wrongly started) shadow copy would be logged by now
    expect(await loggedRows(s)).toEqual([]);
    expect(metricValue(await metricsText(s), 'conveyor_prediction_errors_total{model="credit-risk",reason="bad_request"}')).toBe(1);
  });

  it('missing and unknown features are refused against production before the candidate session is used', async () => {
    const v2 = await registerCandidate('c2', FIXTURE_MODEL_BYTES);
    await setSplit('canary', v2, 100, 'ro-400', 'canary-100');
    await host.refresh();
    const s = start();
    const used = vi.spyOn(host, 'useSession');
    expect((await predict(s, { instance: missingScore })).statusCode).toBe(400);
    expect((await predict(s, { instance: { ...ROW, colour: 'red' } })).statusCode).toBe(400);
    expect(used).not.toHaveBeenCalled();
    used.mockRestore();
    expect(await loggedRows(s)).toEqual([]);
  });
});

describe('model host routes', () => {
  it('refuses a candidate whose bytes do not match the registry hash: production keeps all the traffic', async () => {
    await host.refresh();
    const production = host.get(MODEL)!;
    const tampered = Buffer.from(FIXTURE_MODEL_BYTES);
    tampered[tampered.length - 10] = tampered[tampered.length - 10]! ^ 0xff;
    const claimed = sha256Hex(Buffer.from('hash the registry recorded for version 2'));
    const v2 = await registerCandidate('c2', tampered, claimed);
    expect(v2.artifact.sha256).toBe(claimed);
    await setSplit('canary', v2, 50, 'ro-bad', 'canary-50');

    await host.refresh();
    const errors = logs.filter((l) => l.level === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ model: MODEL, version: 2, msg: 'refusing to serve this version; routes keep their current sessions' });
    expect(errors[0]!.err).toContain('SHA-256 mismatch');
    expect(host.route(MODEL)).toEqual({ production, split: null });
    expect(host.list()).toEqual([{ model: MODEL, version: 1, sha256: FIXTURE_MODEL_SHA, loadedAt: expect.any(String), traffic: null }]);

    const s = start();
    for (let i = 0; i < 40; i++) {
      const r = (await predict(s, { key: `k${i}`, instance: ROW })).json() as PredictResponse;
      expect(r).toMatchObject({ version: 1, arm: 'production' });
    }
    // Not retried (and re-logged) on every refresh.
    await host.refresh();
    expect(logs.filter((l) => l.level === 50)).toHaveLength(1);
    expect(host.route(MODEL)?.split).toBeNull();
  });

  it('clearing the split releases the candidate session; production keeps serving', async () => {
    const v2 = await registerCandidate('c2', FIXTURE_MODEL_BYTES);
    await setSplit('canary', v2, 50, 'ro-1', 'canary-50');
    await host.refresh();
    const production = host.get(MODEL)!;
    const candidate = host.route(MODEL)!.split!.candidate;
    expect(candidate).toMatchObject({ version: 2, sha256: FIXTURE_MODEL_SHA });
    expect(candidate).not.toBe(production);

    await setSplit('none', null, 0, 'ro-1', 'cleared');
    await host.refresh();
    expect(host.route(MODEL)).toEqual({ production, split: null });
    expect(host.list()[0]!.traffic).toBeNull();
    expect(logs.some((l) => l.msg === 'traffic split changed' && (l as LogLine & { mode?: string }).mode === 'none')).toBe(true);
    await waitReleased(candidate);
    expect(production.retired).toBeUndefined();
    expect((await production.loaded.predict(ROWS)).task).toBe('classification');
  });

  it('promoting the candidate reuses its session as production (no reload) and releases the old one', async () => {
    const v2 = await registerCandidate('c2', FIXTURE_MODEL_BYTES);
    await setSplit('canary', v2, 25, 'ro-1', 'canary-25');
    await host.refresh();
    const old = host.get(MODEL)!;
    const candidate = host.route(MODEL)!.split!.candidate;
    const loadedAt = candidate.loadedAt;

    await registry.moveAlias({ model: MODEL, alias: 'production', version: 2, expectedVersion: 1, run: { workflowId: 'wf-ro-1', runId: 'run-ro-1' }, rolloutId: 'ro-1' });
    await host.refresh();
    const route = host.route(MODEL)!;
    expect(route.production).toBe(candidate);
    expect(route.production.loaded).toBe(candidate.loaded);
    expect(route.production.loadedAt).toBe(loadedAt);
    // The split still names v2, which is production now: no split.
    expect(route.split).toBeNull();
    expect(candidate.retired).toBeUndefined();
    await waitReleased(old);

    const s = start();
    const r = (await predict(s, { key: 'k1', instance: ROW })).json() as PredictResponse;
    expect(r).toMatchObject({ version: 2, arm: 'production' });
  });
});

describe('registry traffic', () => {
  it('one rollout at a time: a second rollout gets TrafficOwnedError until the first clears', async () => {
    const v2 = await registerCandidate('c2', FIXTURE_MODEL_BYTES);
    const first = await setSplit('canary', v2, 10, 'ro-a', 'canary-10');
    expect(first).toMatchObject({ seq: 1, mode: 'canary', rolloutId: 'ro-a', percent: 10, candidate: { version: 2, sha256: FIXTURE_MODEL_SHA } });

    const err = await setSplit('ab', v2, 50, 'ro-b', 'ab-50').then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TrafficOwnedError);
    expect(err).toMatchObject({ model: MODEL, owner: 'ro-a', name: 'TrafficOwnedError' });
    expect((err as Error).message).toContain('ro-a');
    expect(await registry.getTraffic(MODEL)).toEqual(first);

    // The owner moves on and clears; then another rollout may take the split.
    expect(await setSplit('canary', v2, 50, 'ro-a', 'canary-50')).toMatchObject({ seq: 2, percent: 50 });
    expect(await setSplit('none', null, 0, 'ro-a', 'cleared')).toMatchObject({ seq: 3, mode: 'none' });
    expect(await setSplit('ab', v2, 50, 'ro-b', 'ab-50')).toMatchObject({ seq: 4, mode: 'ab', rolloutId: 'ro-b' });
    expect(await store.list(keys.trafficPrefix(MODEL))).toHaveLength(4);
  });

  it('re-writing the same (rolloutId, step) is a no-op', async () => {
    const v2 = await registerCandidate('c2', FIXTURE_MODEL_BYTES);
    const a = await setSplit('canary', v2, 10, 'ro-a', 'canary-10');
    const b = await setSplit('canary', v2, 10, 'ro-a', 'canary-10');
    expect(b).toEqual(a);
    expect(await store.list(keys.trafficPrefix(MODEL))).toHaveLength(1);
    expect(await registry.getTraffic(MODEL)).toEqual(a);
  });

  it('refuses a candidate hash that differs from the version record', async () => {
    const v2 = await registerCandidate('c2', FIXTURE_MODEL_BYTES);
    const other = sha256Hex(Buffer.from('not the artifact of version 2'));
    await expect(
      registry.setTraffic({ model: MODEL, mode: 'canary', candidate: { version: 2, sha256: other }, percent: 10, rolloutId: 'ro-a', step: 'canary-10', workflowId: null }),
    ).rejects.toThrow(`${MODEL}@2 has artifact ${v2.artifact.sha256.slice(0, 12)}, not ${other.slice(0, 12)}`);
    expect(await store.list(keys.trafficPrefix(MODEL))).toEqual([]);
    expect(await registry.getTraffic(MODEL)).toBeNull();
  });
});
