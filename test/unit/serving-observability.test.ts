import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { Registry } from '../../src/registry/registry.js';
import { ModelHost } from '../../src/serving/model-host.js';
import { PredictionLog, type PredictionLogOptions, type PredictionRecord } from '../../src/serving/prediction-log.js';
import { buildServing, type Serving } from '../../src/serving/server.js';
import type { PutOptions } from '../../src/store/artifact-store.js';
import { InvalidNameError, keys } from '../../src/store/keys.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';
import { deployFixtureModel, FIXTURE_MODEL_SHA } from '../helpers/fixture-model.js';

const MODEL_SHA = FIXTURE_MODEL_SHA;
const MODEL = 'credit-risk';
const TOKEN = 'a-long-enough-test-token-123';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const ROWS = [
  { age: 78, income: 45729.94, loan_amount: 5152.29, loan_term_months: 12, credit_score: 768, employment_years: 8.7, num_open_accounts: 4, debt_to_income: 0.247, home_ownership: 'OWN', purpose: 'credit_card', region: 'east' },
  { age: 26, income: 42580.78, loan_amount: 20459.04, loan_term_months: 48, credit_score: 611, employment_years: 5.8, num_open_accounts: 1, debt_to_income: 0.37, home_ownership: 'RENT', purpose: 'debt_consolidation', region: 'north' },
];
const logger = createLogger({ level: 'silent', pretty: false });

/** A memory store whose writes under a prefix can be made to fail, like an unreachable MinIO. */
class FlakyStore extends MemoryArtifactStore {
  down = false;
  puts = 0;
  override async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
    if (this.down && !key.startsWith('registry/') && !key.startsWith('models/')) throw new Error('connect ECONNREFUSED 127.0.0.1:9000');
    this.puts++;
    return super.put(key, body, opts);
  }
}

let store: FlakyStore;
let host: ModelHost;
let serving: Serving | undefined;

async function serveFixture(): Promise<void> {
  const registry = new Registry(store);
  await deployFixtureModel(store, registry, MODEL);
  host = new ModelHost(registry, store, logger);
  await host.refresh();
  expect(host.get(MODEL)?.version).toBe(1);
}

function start(log: Partial<PredictionLogOptions> = {}): Serving {
  serving = buildServing({ host, logger, tokens: [TOKEN], store, predictionLog: { flushRows: 1000, flushIntervalMs: 60_000, ...log } });
  return serving;
}

async function predict(s: Serving, rows: Array<Record<string, unknown>>, headers: Record<string, string> = AUTH) {
  return s.app.inject({ method: 'POST', url: `/v1/models/${MODEL}:predict`, headers, payload: { instances: rows } });
}

async function storedRows(prefix: string): Promise<{ keys: string[]; rows: Array<Record<string, unknown>> }> {
  const found = await store.list(prefix);
  const rows = [];
  for (const key of found) {
    const text = (await store.get(key)).toString('utf8');
    expect(text.endsWith('\n')).toBe(true);
    rows.push(...text.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>));
  }
  return { keys: found, rows };
}

async function metricsText(s: Serving): Promise<string> {
  const res = await s.app.inject({ method: 'GET', url: '/metrics', headers: AUTH });
  expect(res.statusCode).toBe(200);
  expect(res.headers['content-type']).toContain('text/plain');
  return res.body;
}

beforeEach(async () => {
  store = new FlakyStore();
  await serveFixture();
});

afterEach(async () => {
  await serving?.app.close();
  serving = undefined;
  await host.close();
});

describe('prediction log', () => {
  it('writes every answered row, with its request id, model version and output, as one JSON-lines batch', async () => {
    const s = start();
    const first = await predict(s, ROWS);
    const second = await predict(s, [ROWS[1]!]);
    expect(first.statusCode).toBe(200);
    expect(second.statusCode).toBe(200);
    // Nothing is written on the request path.
    expect(await store.list('predictions/')).toEqual([]);
    expect(s.predictionLog?.pending).toBe(3);

    await s.predictionLog!.flush();
    expect(s.predictionLog?.pending).toBe(0);
    const { keys: written, rows } = await storedRows(keys.predictionsPrefix(MODEL));
    expect(written.length).toBeGreaterThanOrEqual(1); // one per UTC hour: two only across an hour boundary
    for (const key of written) expect(key).toMatch(/^predictions\/credit-risk\/\d{4}-\d{2}-\d{2}\/\d{2}\/\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{12}\.jsonl$/);
    expect(rows).toHaveLength(3);

    const a = first.json() as { requestId: string; predictions: unknown[] };
    const b = second.json() as { requestId: string; predictions: unknown[] };
    expect(a.requestId).not.toBe(b.requestId);
    const expected = [
      { requestId: a.requestId, rowIndex: 0, features: ROWS[0], output: a.predictions[0] },
      { requestId: a.requestId, rowIndex: 1, features: ROWS[1], output: a.predictions[1] },
      { requestId: b.requestId, rowIndex: 0, features: ROWS[1], output: b.predictions[0] },
    ];
    expect(rows).toEqual(expected.map((e) => ({ ...e, time: expect.any(String), model: MODEL, version: 1, sha256: MODEL_SHA, arm: 'production', latencyMs: expect.any(Number) })));
    for (const row of rows as unknown as PredictionRecord[]) {
      expect(new Date(row.time).toISOString()).toBe(row.time);
      expect(written.some((k) => k.startsWith(`predictions/credit-risk/${row.time.slice(0, 10)}/${row.time.slice(11, 13)}/`))).toBe(true);
      expect(row.latencyMs).toBeGreaterThan(0);
      expect(row.output).toMatchObject({ label: expect.any(Number), probabilities: { '0': expect.any(Number), '1': expect.any(Number) } });
    }
  });

  it('flushes on its own once flushRows rows are buffered, and on close', async () => {
    const s = start({ flushRows: 2 });
    await predict(s, ROWS);
    for (let i = 0; i < 200 && (await store.list('predictions/')).length === 0; i++) await sleep(5);
    expect((await storedRows('predictions/')).rows).toHaveLength(2);

    await predict(s, [ROWS[0]!]);
    expect(s.predictionLog?.pending).toBe(1);
    await s.app.close();
    expect((await storedRows('predictions/')).rows).toHaveLength(3);
    expect(s.predictionLog?.pending).toBe(0);
  });

  it('keeps rows when the store is down, answers the requests anyway, and writes them on the next flush', async () => {
    const s = start();
    store.down = true;
    const res = await predict(s, ROWS);
    expect(res.statusCode).toBe(200);
    await s.predictionLog!.flush();
    expect(await store.list('predictions/')).toEqual([]);
    expect(s.predictionLog?.pending).toBe(2);
    expect(await metricsText(s)).toContain('conveyor_prediction_log_pending 2');

    // Still down: still kept, the retried batch is not duplicated.
    await predict(s, [ROWS[0]!]);
    await s.predictionLog!.flush();
    expect(s.predictionLog?.pending).toBe(3);

    store.down = false;
    await s.predictionLog!.flush();
    expect(s.predictionLog?.pending).toBe(0);
    const { rows } = await storedRows('predictions/');
    expect(rows.map((r) => [r.requestId, r.rowIndex])).toEqual([
      [(res.json() as { requestId: string }).requestId, 0],
      [(res.json() as { requestId: string }).requestId, 1],
      [expect.any(String), 0],
    ]);
    expect(await metricsText(s)).toContain('conveyor_prediction_log_pending 0');
  });

  it('a retried batch whose earlier write landed is not written twice', async () => {
    class LostAnswerStore extends MemoryArtifactStore {
      loseNext = true;
      override async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
        const result = await super.put(key, body, opts);
        if (this.loseNext) {
          this.loseNext = false;
          throw new Error('socket hang up');
        }
        return result;
      }
    }
    const lossy = new LostAnswerStore();
    const log = new PredictionLog(lossy, logger, { flushIntervalMs: 60_000 });
    log.append([record('r1', 0)]);
    await log.flush();
    expect(log.pending).toBe(1);
    await log.flush();
    expect(log.pending).toBe(0);
    const written = await lossy.list('predictions/');
    expect(written).toHaveLength(1);
    expect((await lossy.get(written[0]!)).toString().trimEnd().split('\n')).toHaveLength(1);
    await log.close();
  });

  it('bounds memory: past maxBufferedRows the oldest rows are dropped and counted', async () => {
    const s = start({ maxBufferedRows: 3 });
    store.down = true;
    const first = (await predict(s, ROWS)).json() as { requestId: string };
    await s.predictionLog!.flush(); // fails: the two rows wait in a batch for the retry
    const second = (await predict(s, ROWS)).json() as { requestId: string };
    expect(s.predictionLog?.pending).toBe(3);
    expect(s.predictionLog?.dropped).toBe(1);
    const third = (await predict(s, [ROWS[0]!])).json() as { requestId: string };
    expect(s.predictionLog?.pending).toBe(3);
    expect(s.predictionLog?.dropped).toBe(2);
    const text = await metricsText(s);
    expect(text).toContain('conveyor_prediction_log_dropped_total 2');
    expect(text).toContain('conveyor_prediction_log_pending 3');

    store.down = false;
    await s.predictionLog!.flush();
    const { rows } = await storedRows('predictions/');
    expect(rows.map((r) => [r.requestId, r.rowIndex])).toEqual([
      [second.requestId, 0],
      [second.requestId, 1],
      [third.requestId, 0],
    ]);
    expect(rows.some((r) => r.requestId === first.requestId)).toBe(false);
  });

  it('drops from the unbatched buffer as well, oldest first', async () => {
    const memory = new MemoryArtifactStore();
    const dropped: number[] = [];
    const log = new PredictionLog(memory, logger, { maxBufferedRows: 4, flushRows: 100, flushIntervalMs: 60_000 }, (n) => dropped.push(n));
    log.append([1, 2, 3].map((i) => record(`r${i}`, 0)));
    log.append([4, 5, 6].map((i) => record(`r${i}`, 0)));
    expect(log.pending).toBe(4);
    expect(log.dropped).toBe(2);
    expect(dropped).toEqual([2]);
    await log.close();
    const body = (await memory.get((await memory.list('predictions/'))[0]!)).toString();
    expect(body.trimEnd().split('\n').map((l) => (JSON.parse(l) as PredictionRecord).requestId)).toEqual(['r3', 'r4', 'r5', 'r6']);
  });

  it('rejects nonsensical options', () => {
    expect(() => new PredictionLog(new MemoryArtifactStore(), logger, { flushRows: 0 })).toThrow(/flushRows/);
  });
});

function record(requestId: string, rowIndex: number): PredictionRecord {
  return {
    requestId,
    rowIndex,
    time: new Date().toISOString(),
    model: MODEL,
    version: 1,
    sha256: MODEL_SHA,
    arm: 'production',
    features: { a: 1 },
    output: { value: 1 },
    latencyMs: 1,
  };
}

describe('feedback', () => {
  const url = `/v1/models/${MODEL}:feedback`;

  it('stores labels as JSON lines under feedback/<model>/<day>/ and answers 202 with the count', async () => {
    const s = start();
    const res = await s.app.inject({
      method: 'POST',
      url,
      headers: AUTH,
      payload: { labels: [{ requestId: 'req-1', label: 1 }, { requestId: 'req-2', rowIndex: 3, label: 'bad' }] },
    });
    expect(res.statusCode).toBe(202);
    expect(res.json()).toEqual({ accepted: 2 });
    const { keys: written, rows } = await storedRows(keys.feedbackPrefix(MODEL));
    expect(written).toHaveLength(1);
    expect(written[0]).toMatch(/^feedback\/credit-risk\/\d{4}-\d{2}-\d{2}\/\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{12}\.jsonl$/);
    expect(rows).toEqual([
      { model: MODEL, requestId: 'req-1', rowIndex: 0, label: 1, receivedAt: expect.any(String) },
      { model: MODEL, requestId: 'req-2', rowIndex: 3, label: 'bad', receivedAt: expect.any(String) },
    ]);
    expect(written[0]).toContain(`/${(rows[0]!.receivedAt as string).slice(0, 10)}/`);
  });

  it.each([
    [{}, 'labels'],
    [{ labels: [] }, 'labels'],
    [{ labels: 'x' }, 'labels'],
    [{ labels: [{ requestId: 'a', label: 1 }, { label: 1 }] }, 'labels.1.requestId'],
    [{ labels: [{ requestId: 'a', label: true }] }, 'labels.0.label'],
    [{ labels: [{ requestId: 'a', label: 1, rowIndex: -1 }] }, 'labels.0.rowIndex'],
    [{ labels: [{ requestId: 'a', label: 1, rowIndex: 1.5 }] }, 'labels.0.rowIndex'],
    [{ labels: [{ requestId: '', label: 1 }] }, 'labels.0.requestId'],
    [{ labels: Array.from({ length: 10_001 }, () => ({ requestId: 'a', label: 1 })) }, 'labels'],
  ])('refuses %j naming %s', async (payload, field) => {
    const s = start();
    const res = await s.app.inject({ method: 'POST', url, headers: AUTH, payload });
    expect(res.statusCode).toBe(400);
    expect((res.json() as { error: string }).error.startsWith(`${field}:`)).toBe(true);
    expect(await store.list('feedback/')).toEqual([]);
  });

  it('accepts 10 000 labels; needs the token; 404 for a model not served; 503 when the store is down', async () => {
    const s = start();
    const many = await s.app.inject({ method: 'POST', url, headers: AUTH, payload: { labels: Array.from({ length: 10_000 }, (_, i) => ({ requestId: `r${i}`, label: i % 2 })) } });
    expect(many.statusCode).toBe(202);
    expect(many.json()).toEqual({ accepted: 10_000 });

    const payload = { labels: [{ requestId: 'a', label: 1 }] };
    expect((await s.app.inject({ method: 'POST', url, payload })).statusCode).toBe(401);
    expect((await s.app.inject({ method: 'POST', url: '/%761/models/credit-risk%3Afeedback', payload })).statusCode).toBe(401);
    expect((await s.app.inject({ method: 'POST', url: '/v1/models/other-model:feedback', headers: AUTH, payload })).statusCode).toBe(404);
    expect((await s.app.inject({ method: 'POST', url: '/v1/models/Bad..Name:feedback', headers: AUTH, payload })).statusCode).toBe(400);
    store.down = true;
    expect((await s.app.inject({ method: 'POST', url, headers: AUTH, payload })).statusCode).toBe(503);
    expect(await store.list('feedback/')).toHaveLength(1);
  });
});

describe('/metrics', () => {
  it('needs the token', async () => {
    const s = start();
    expect((await s.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401);
    expect((await s.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer wrong-token-of-some-length-000' } })).statusCode).toBe(401);
  });

  it('counts predictions, errors by reason and latency, per app', async () => {
    const s = start();
    expect((await predict(s, ROWS)).statusCode).toBe(200);
    expect((await predict(s, [ROWS[0]!])).statusCode).toBe(200);
    expect((await predict(s, [{ ...ROWS[0], credit_score: undefined }])).statusCode).toBe(400);
    expect((await s.app.inject({ method: 'POST', url: `/v1/models/${MODEL}:predict`, headers: AUTH, payload: { instances: 'x' } })).statusCode).toBe(400);
    expect((await s.app.inject({ method: 'POST', url: '/v1/models/no-such-model:predict', headers: AUTH, payload: { instance: ROWS[0] } })).statusCode).toBe(404);
    const boom = vi.spyOn(host.get(MODEL)!.loaded, 'predict').mockRejectedValueOnce(new Error('session exploded'));
    expect((await predict(s, [ROWS[0]!])).statusCode).toBe(500);
    boom.mockRestore();

    const text = await metricsText(s);
    expect(text).toContain('conveyor_predictions_total{model="credit-risk",version="1",arm="production"} 3');
    expect(text).toContain('conveyor_prediction_errors_total{model="credit-risk",reason="bad_request"} 2');
    expect(text).toContain('conveyor_prediction_errors_total{model="_unknown",reason="not_found"} 1');
    expect(text).toContain('conveyor_prediction_errors_total{model="credit-risk",reason="internal"} 1');
    expect(text).toContain('conveyor_prediction_latency_seconds_count{model="credit-risk",version="1",arm="production"} 2');
    expect(text).toMatch(/conveyor_prediction_latency_seconds_bucket\{le="\+Inf",model="credit-risk",version="1",arm="production"\} 2/);
    expect(text).toContain('conveyor_prediction_log_dropped_total 0');
    // 3 answered rows and the failed request's row (its error is logged for analysis).
    expect(text).toContain('conveyor_prediction_log_pending 4');
    // A name that is not served never becomes a label value.
    expect(text).not.toContain('no-such-model');

    // Each app has its own registry: a second app starts from zero.
    const other = buildServing({ host, logger, tokens: [TOKEN] });
    try {
      const res = await other.app.inject({ method: 'GET', url: '/metrics', headers: AUTH });
      expect(res.statusCode).toBe(200);
      expect(res.body).not.toContain('conveyor_predictions_total{');
      expect(res.body).toContain('conveyor_prediction_log_pending 0');
      expect(other.predictionLog).toBeUndefined();
    } finally {
      await other.app.close();
    }
  });
});

describe('prediction and feedback keys', () => {
  const time = new Date('2026-03-04T05:06:07.089Z');
  it('partition by UTC day (and hour for predictions)', () => {
    expect(keys.predictionBatch(MODEL, time, 'abc123')).toBe('predictions/credit-risk/2026-03-04/05/20260304T050607.089Z-abc123.jsonl');
    expect(keys.feedbackBatch(MODEL, time, 'abc123')).toBe('feedback/credit-risk/2026-03-04/20260304T050607.089Z-abc123.jsonl');
  });
  it.each([
    () => keys.predictionBatch('../x', time, 'a'),
    () => keys.predictionBatch('Credit', time, 'a'),
    () => keys.predictionBatch(MODEL, time, '../a'),
    () => keys.predictionBatch(MODEL, new Date('nope'), 'a'),
    () => keys.feedbackBatch('a/b', time, 'a'),
    () => keys.predictionsPrefix(''),
  ])('refuses bad parts (%#)', (build) => {
    expect(build).toThrow(InvalidNameError);
  });
});
