import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Prediction } from '../../src/eval/onnx-model.js';
import { createLogger } from '../../src/logger.js';
import { PredictionLog, type PredictionRecord } from '../../src/serving/prediction-log.js';
import { ServingMetrics } from '../../src/serving/metrics.js';
import { isoNow, outputsJson } from '../../src/serving/server.js';
import { ServingTokens } from '../../src/serving/tokens.js';
import type { PutOptions } from '../../src/store/artifact-store.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';

const logger = createLogger({ level: 'silent', pretty: false });
const A = 'serving-token-aaaaaaaaaaaaaaaaaaaa';
const B = 'serving-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbb';

describe('serving tokens (constant-time comparison of plain-text tokens)', () => {
  const tokens = new ServingTokens([A, B]);

  it('accepts each configured token, with any case of the scheme and trailing blanks', () => {
    expect(tokens.accepts(`Bearer ${A}`)).toBe(true);
    expect(tokens.accepts(`bearer ${B} `)).toBe(true);
  });

  it('refuses a wrong token of the same length, a prefix, a longer token, other schemes and nothing', () => {
    expect(tokens.accepts(`Bearer ${A.slice(0, -1)}b`)).toBe(false);
    expect(tokens.accepts(`Bearer ${A.slice(0, -1)}`)).toBe(false);
    expect(tokens.accepts(`Bearer ${A}x`)).toBe(false);
    expect(tokens.accepts(`Basic ${A}`)).toBe(false);
    expect(tokens.accepts(A)).toBe(false);
    expect(tokens.accepts(undefined)).toBe(false);
    expect(tokens.accepts('Bearer ' + 'x'.repeat(600))).toBe(false);
  });

  it('refuses a configuration without tokens or with a short token, naming which', () => {
    expect(() => new ServingTokens([])).toThrow(/at least one API token/);
    expect(() => new ServingTokens([A, 'short'])).toThrow(/serving token 2 is shorter than 24 characters/);
  });
});

describe('isoNow', () => {
  it('is toISOString, across millisecond, second and day boundaries', () => {
    const base = Date.UTC(2026, 10, 23, 23, 59, 59, 0);
    for (const ms of [0, 7, 99, 999, 1000, base, base + 5, base + 50, base + 999, base + 1000, base + 1001, Date.now()]) {
      expect(isoNow(ms)).toBe(new Date(ms).toISOString());
    }
  });
});

describe('outputsJson (each row written once, for the answer and the log)', () => {
  const classification = (classes: Array<number | string>, labels: Array<number | string>, probabilities: number[]): Prediction => ({
    task: 'classification',
    classes,
    labels,
    probabilities: Float32Array.from(probabilities),
  });
  /** What the rows were before: objects given to JSON.stringify. */
  const expected = (p: Prediction, start: number, end: number): string[] => {
    const out: string[] = [];
    for (let i = start; i < end; i++) {
      if (p.task === 'regression') out.push(JSON.stringify({ value: p.values[i] }));
      else out.push(JSON.stringify({ label: p.labels[i], probabilities: Object.fromEntries(p.classes.map((c, j) => [String(c), p.probabilities[i * p.classes.length + j]])) }));
    }
    return out;
  };

  it('matches JSON.stringify of {label, probabilities} for numeric and string classes, any row range', () => {
    const numeric = classification([0, 1], [1, 0, 1], [0.2, 0.8, 0.9, 0.1, 1 / 3, 2 / 3]);
    expect(outputsJson(numeric, 0, 3)).toEqual(expected(numeric, 0, 3));
    expect(outputsJson(numeric, 1, 3)).toEqual(expected(numeric, 1, 3));
    const strings = classification(['no', 'yes "quoted"', 'ünïcode'], ['yes "quoted"'], [0.1, 0.7, 0.2]);
    expect(outputsJson(strings, 0, 1)).toEqual(expected(strings, 0, 1));
    for (const text of outputsJson(strings, 0, 1)) expect(JSON.parse(text)).toHaveProperty(['probabilities', 'ünïcode']);
  });

  it('writes NaN and infinite numbers as null, as JSON.stringify does', () => {
    const odd = classification([0, 1], [0], [Number.NaN, Number.POSITIVE_INFINITY]);
    expect(outputsJson(odd, 0, 1)).toEqual(expected(odd, 0, 1));
    const regression: Prediction = { task: 'regression', values: Float64Array.from([1.5, Number.NEGATIVE_INFINITY, -0]) };
    expect(outputsJson(regression, 0, 3)).toEqual(expected(regression, 0, 3));
  });

  it('lists index-like class names first and ascending, a repeated name once (its last value), and leaves out a missing label, as JSON.stringify of the object does', () => {
    for (const [classes, probabilities] of [
      [[1, 0], [0.3, 0.7]],
      [['high', '10', '2'], [0.1, 0.2, 0.7]],
      [['a', 'a'], [0.25, 0.75]],
      [[1, '1', 'b'], [0.1, 0.2, 0.7]],
    ] as Array<[Array<number | string>, number[]]>) {
      const p = classification(classes, [classes[0]!], probabilities);
      expect(outputsJson(p, 0, 1)).toEqual(expected(p, 0, 1));
    }
    const short = classification([0, 1], [1], [0.2, 0.8, 0.6, 0.4]);
    expect(outputsJson(short, 0, 2)).toEqual(expected(short, 0, 2));
    expect(() => outputsJson(short, 0, 2).map((t) => JSON.parse(t) as unknown)).not.toThrow();
  });

  it('keeps a class named __proto__ as an ordinary key', () => {
    const p = classification(['__proto__', 'b'], ['b'], [0.25, 0.75]);
    const [text] = outputsJson(p, 0, 1);
    expect(Object.keys((JSON.parse(text!) as { probabilities: object }).probabilities)).toEqual(['__proto__', 'b']);
  });
});

/** Every row the log wrote to a memory store, batch by batch. */
async function storedRows(store: MemoryArtifactStore): Promise<PredictionRecord[]> {
  const bodies = await Promise.all((await store.list('predictions/')).map(async (k) => (await store.get(k)).toString()));
  return bodies
    .join('')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as PredictionRecord);
}

describe('prediction log byte buffers', () => {
  const request = (requestId: string) => ({ requestId, time: '2026-11-23T17:00:00.000Z', model: 'm', version: 1, sha256: 'a'.repeat(64), arm: 'production' as const, rolloutId: null, latencyMs: 0.5 });

  it('rows larger than the initial buffer and non-ASCII text come back exactly', async () => {
    const store = new MemoryArtifactStore();
    const log = new PredictionLog(store, logger, { flushIntervalMs: 60_000 });
    const big = { text: 'x'.repeat(40_000), name: 'żółw 🐢 "quoted"\n' };
    log.appendRequest(request('r1'), [big, { a: 1 }], ['{"value":1}', '{"value":2}']);
    log.append([{ requestId: 'r2', rowIndex: 0, time: '2026-11-23T17:00:01.000Z', model: 'm', version: 1, sha256: 'a'.repeat(64), arm: 'production', features: { s: 'é' }, output: { value: 3 }, latencyMs: 1 }]);
    await log.close();
    const [key] = await store.list('predictions/');
    const rows = (await store.get(key!)).toString('utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as PredictionRecord);
    expect(rows.map((r) => [r.requestId, r.rowIndex, r.output])).toEqual([
      ['r1', 0, { value: 1 }],
      ['r1', 1, { value: 2 }],
      ['r2', 0, { value: 3 }],
    ]);
    expect(rows[0]!.features).toEqual(big);
    expect(rows[2]!.features).toEqual({ s: 'é' });
  });

  it('rows appended while a batch is being written go to a new batch; the body being written is not changed', async () => {
    const bodies: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    class SlowStore extends MemoryArtifactStore {
      override async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
        const text = body.toString();
        await gate;
        // The buffer handed to put must still hold exactly what it held when put was called.
        expect(body.toString()).toBe(text);
        bodies.push(text);
        return super.put(key, body, opts);
      }
    }
    const log = new PredictionLog(new SlowStore(), logger, { flushIntervalMs: 60_000 });
    log.appendRequest(request('first'), [{ a: 1 }], ['{"value":1}']);
    const flushing = log.flush();
    for (let i = 0; i < 50; i++) log.appendRequest(request(`later-${i}`), [{ a: i }], [`{"value":${i}}`]);
    release();
    await flushing;
    await log.close();
    expect(bodies).toHaveLength(2);
    expect(bodies[0]!.trimEnd().split('\n').map((l) => (JSON.parse(l) as PredictionRecord).requestId)).toEqual(['first']);
    expect(bodies[1]!.trimEnd().split('\n')).toHaveLength(50);
    expect(log.written).toBe(51);
  });

  it('rows dropped from a batch that keeps taking rows give their memory back, and the kept rows come out in order', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    class HeldStore extends MemoryArtifactStore {
      override async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
        await gate;
        return super.put(key, body, opts);
      }
    }
    const store = new HeldStore();
    const log = new PredictionLog(store, logger, { flushRows: 1000, maxBufferedRows: 10, flushIntervalMs: 60_000 });
    log.appendRequest(request('held'), [{ a: 0 }], ['{"value":0}']);
    const flushing = log.flush(); // its write waits: rows appended now go to an open batch
    for (let i = 0; i < 20_000; i++) log.appendRequest(request(`r${i}`), [{ a: i, pad: 'x'.repeat(100) }], [`{"value":${i}}`]);
    expect(log.pending).toBe(10);
    const open = [...(log as unknown as { open: Map<string, { bytes: Buffer }> }).open.values()];
    expect(open).toHaveLength(1);
    // 20 000 rows of ~300 bytes were appended; only about the last ten are kept.
    expect(open[0]!.bytes.length).toBeLessThan(64 * 1024);
    release();
    await flushing;
    await log.close();
    const rows = await storedRows(store);
    // The batch being written is never dropped from; of the rest, the newest nine fit beside it.
    expect(rows.map((r) => r.requestId).sort()).toEqual(['held', ...Array.from({ length: 9 }, (_, i) => `r${19_991 + i}`)].sort());
    expect(log.dropped + log.written).toBe(20_001);
  });

  it('a flush writes the batches there were when it began, and ends even while full batches keep coming', async () => {
    const gates: Array<() => void> = [];
    class OneAtATime extends MemoryArtifactStore {
      override async put(key: string, body: Buffer | string, opts?: PutOptions): Promise<{ etag: string }> {
        await new Promise<void>((resolve) => gates.push(resolve));
        return super.put(key, body, opts);
      }
    }
    const store = new OneAtATime();
    const log = new PredictionLog(store, logger, { flushRows: 2, flushIntervalMs: 60_000 });
    log.appendRequest(request('a1'), [{ a: 1 }, { a: 2 }], ['1', '2']); // a full batch: a flush starts
    for (let i = 0; i < 100 && gates.length === 0; i++) await new Promise((r) => setImmediate(r));
    expect(gates).toHaveLength(1);
    for (let i = 0; i < 3; i++) log.appendRequest(request(`more${i}`), [{ a: 1 }, { a: 2 }], ['1', '2']);
    log.appendRequest({ ...request('other'), model: 'other-model' }, [{ a: 1 }], ['1']);
    gates.shift()!();
    for (let i = 0; i < 100 && log.written < 2; i++) await new Promise((r) => setImmediate(r));
    expect(log.written).toBe(2);
    // The first flush is over (no write of the batches sealed meanwhile was started by it);
    // the rest are written by the next one, the small group among them.
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(gates).toHaveLength(0);
    const rest = log.close();
    for (let i = 0; i < 1000 && log.pending > 0; i++) {
      gates.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    await rest;
    expect(log.written).toBe(9);
    expect((await store.list('predictions/other-model/')).length).toBe(1);
  });

  it('writes rolloutId and error only when set', async () => {
    const store = new MemoryArtifactStore();
    const log = new PredictionLog(store, logger, { flushIntervalMs: 60_000 });
    log.appendRequest(request('plain'), [{ a: 1 }], ['{"value":1}']);
    log.appendRequest({ ...request('canary'), arm: 'canary', rolloutId: 'rollout-1', error: 'boom "x"' }, [{ a: 1 }], null);
    await log.close();
    const rows = await storedRows(store);
    const plain = rows.find((r) => r.requestId === 'plain')!;
    const canary = rows.find((r) => r.requestId === 'canary')!;
    expect('rolloutId' in plain || 'error' in plain).toBe(false);
    expect(canary).toMatchObject({ arm: 'canary', rolloutId: 'rollout-1', error: 'boom "x"', output: null });
  });

  it('routes taking turns (production, canary, shadow, another version) each keep their own fields; shadow rows have no features', async () => {
    const store = new MemoryArtifactStore();
    const log = new PredictionLog(store, logger, { flushIntervalMs: 60_000 });
    const routes = [
      { arm: 'production' as const, version: 1, rolloutId: 'ro' },
      { arm: 'canary' as const, version: 2, rolloutId: 'ro' },
      { arm: 'shadow' as const, version: 2, rolloutId: 'ro' },
      { arm: 'production' as const, version: 3, rolloutId: null },
    ];
    const order = [0, 1, 0, 2, 0, 2, 3, 1, 3, 0, 2, 1];
    order.forEach((r, i) => log.appendRequest({ ...request(`r${i}`), ...routes[r]! }, [{ a: i }], [`{"value":${i}}`]));
    await log.close();
    const rows = await storedRows(store);
    expect(rows).toHaveLength(order.length);
    for (const [i, r] of order.entries()) {
      const row = rows.find((x) => x.requestId === `r${i}`)!;
      const { arm, version, rolloutId } = routes[r]!;
      expect(row).toMatchObject({ arm, version, output: { value: i }, features: arm === 'shadow' ? null : { a: i } });
      expect(row.rolloutId).toBe(rolloutId ?? undefined);
    }
  });
});

describe('answer metrics counted on the request path', () => {
  it('expose exactly what prom-client\'s Histogram and Counter would for the same requests, scrape after scrape', async () => {
    const metrics = new ServingMetrics();
    const reference = new Registry();
    const histogram = new Histogram({
      name: 'conveyor_prediction_latency_seconds',
      help: 'Time to answer a prediction request (validation and inference)',
      labelNames: ['model', 'version', 'arm'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [reference],
    });
    const counter = new Counter({ name: 'conveyor_predictions_total', help: 'Prediction rows answered', labelNames: ['model', 'version', 'arm'], registers: [reference] });
    const ours = async (): Promise<string> =>
      (await metrics.registry.metrics())
        .split('\n\n')
        .filter((block) => block.includes('# HELP conveyor_prediction_latency_seconds ') || block.includes('# HELP conveyor_predictions_total '))
        .sort()
        .join('\n\n')
        .trim();
    const theirs = async (): Promise<string> => (await reference.metrics()).split('\n\n').sort().join('\n\n').trim();
    const answer = (model: string, version: number, arm: string, rows: number, seconds: number): void => {
      metrics.answered(metrics.seriesOf(model, version, arm), rows, seconds);
      histogram.observe({ model, version: String(version), arm }, seconds);
      counter.inc({ model, version: String(version), arm }, rows);
    };
    // Values on and around bucket bounds, above the last one, and a label value needing escapes.
    answer('credit-risk', 1, 'production', 1, 0.0003);
    answer('credit-risk', 1, 'production', 3, 0.0005);
    answer('credit-risk', 1, 'production', 1, 0.00051);
    answer('credit-risk', 2, 'canary', 2, 7);
    answer('m"x\\y', 1, 'shadow', 1, 0.02);
    expect(await ours()).toBe(await theirs());
    expect(await ours()).toContain('conveyor_predictions_total{model="credit-risk",version="1",arm="production"} 5');
    answer('credit-risk', 1, 'production', 4, 0.3);
    expect(await ours()).toBe(await theirs());
    expect(await ours()).toContain('conveyor_predictions_total{model="credit-risk",version="1",arm="production"} 9');
  });
});
