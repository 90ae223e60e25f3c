import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batchStampMs, downloadPredictionWindow, hourPrefixes, openPredictionTable } from '../../src/monitoring/prediction-window.js';
import {
  analyzeWindow,
  armStats,
  compareArms,
  rolloutBoundsSchema,
  shadowComparison,
  type AnalyzeWindowOptions,
  type ArmStats,
  type RolloutBounds,
} from '../../src/rollout/analysis.js';
import type { Arm, PredictionRecord } from '../../src/serving/prediction-log.js';
import { keys } from '../../src/store/keys.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';

const MODEL = 'churn';
const SHA = 'a'.repeat(64);
const FROM = new Date('2024-05-01T10:30:00.000Z');
const TO = new Date('2024-05-01T12:30:00.000Z');
const at = (hhmmss: string): string => `2024-05-01T${hhmmss}.000Z`;

let suffixSeq = 0;
async function writeBatch(store: MemoryArtifactStore, rows: readonly PredictionRecord[], model = MODEL): Promise<string> {
  const key = keys.predictionBatch(model, new Date(rows[0]!.time), `b${suffixSeq++}`);
  await store.put(key, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return key;
}

function row(over: Partial<PredictionRecord> & { requestId: string }): PredictionRecord {
  return {
    rowIndex: 0,
    time: at('11:00:00'),
    model: MODEL,
    version: 1,
    sha256: SHA,
    arm: 'production',
    rolloutId: 'ro-1',
    features: { x: 1 },
    output: binary(0.2),
    latencyMs: 10,
    ...over,
  };
}

/** A binary classifier's output with P(class "1") = p. */
function binary(p: number): PredictionRecord['output'] {
  return { label: p >= 0.5 ? 1 : 0, probabilities: { '0': 1 - p, '1': p } };
}

interface ArmSpec {
  arm: Arm;
  requests: number;
  version?: number;
  /** Output (or error) of request i. */
  output?: (i: number) => PredictionRecord['output'];
  error?: (i: number) => boolean;
  latency?: (i: number) => number;
}

/** One row per request, spread over 10:31-12:28 so the window crosses hour partitions. */
function armRows(spec: ArmSpec): PredictionRecord[] {
  const span = TO.getTime() - FROM.getTime() - 2 * 60_000;
  return Array.from({ length: spec.requests }, (_, i) => {
    const failed = spec.error?.(i) ?? false;
    return row({
      requestId: `${spec.arm}-${i}`,
      arm: spec.arm,
      version: spec.version ?? (spec.arm === 'production' ? 1 : 2),
      time: new Date(FROM.getTime() + 60_000 + Math.floor((span * i) / spec.requests)).toISOString(),
      output: failed ? null : (spec.output?.(i) ?? binary(0.05 + (i % 10) / 10)),
      ...(failed ? { error: 'inference failed: boom' } : {}),
      latencyMs: spec.latency?.(i) ?? 10 + (i % 5),
    });
  });
}

/** Writes rows the way the log does: one batch per UTC hour, stamped with its first row. */
async function writeHourly(store: MemoryArtifactStore, rows: readonly PredictionRecord[]): Promise<void> {
  const byHour = new Map<string, PredictionRecord[]>();
  for (const r of [...rows].sort((a, b) => a.time.localeCompare(b.time))) {
    const hour = r.time.slice(0, 13);
    byHour.set(hour, [...(byHour.get(hour) ?? []), r]);
  }
  for (const list of byHour.values()) await writeBatch(store, list);
}

let workDir: string;
beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'conveyor-rollout-analysis-'));
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

async function withConnection<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T> {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  try {
    return await fn(conn);
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

async function scenario(specs: ArmSpec[], over: Partial<AnalyzeWindowOptions> = {}): Promise<Awaited<ReturnType<typeof analyzeWindow>>> {
  const store = new MemoryArtifactStore();
  await writeHourly(store, specs.flatMap(armRows));
  return analyzeWindow(store, { model: MODEL, rolloutId: 'ro-1', from: FROM, to: TO, candidateArm: 'canary', workDir, ...over });
}

describe('prediction window', () => {
  it('lists the overlapping hours only and parses batch stamps', () => {
    expect(hourPrefixes(MODEL, FROM, TO)).toEqual([
      'predictions/churn/2024-05-01/10/',
      'predictions/churn/2024-05-01/11/',
      'predictions/churn/2024-05-01/12/',
    ]);
    // An exclusive end on the hour does not list that hour.
    expect(hourPrefixes(MODEL, FROM, new Date('2024-05-01T12:00:00.000Z'))).toHaveLength(2);
    expect(hourPrefixes(MODEL, new Date('2024-05-01T23:30:00Z'), new Date('2024-05-02T00:30:00Z'))).toEqual([
      'predictions/churn/2024-05-01/23/',
      'predictions/churn/2024-05-02/00/',
    ]);
    const key = keys.predictionBatch(MODEL, new Date('2024-05-01T12:34:56.789Z'), 'abc');
    expect(batchStampMs(key)).toBe(Date.parse('2024-05-01T12:34:56.789Z'));
    expect(batchStampMs('predictions/churn/2024-05-01/12/not-a-stamp.jsonl')).toBeNull();
    expect(() => hourPrefixes(MODEL, TO, FROM)).toThrow(/from .* must be before to/);
  });

  it('downloads the window, keeps early-stamped batches, skips late ones and loads only valid rows', async () => {
    const store = new MemoryArtifactStore();
    // Stamped before `from`, but its second row is inside the window.
    await writeBatch(store, [row({ requestId: 'early', time: at('10:20:00') }), row({ requestId: 'in-10', time: at('10:40:00') })]);
    await writeBatch(store, [row({ requestId: 'in-11', time: at('11:15:00') }), row({ requestId: 'in-11', rowIndex: 1, time: at('11:15:00') })]);
    await writeBatch(store, [row({ requestId: 'in-12', time: at('12:20:00') }), row({ requestId: 'late-12', time: at('12:31:00') })]);
    // Stamped well after `to`: never downloaded.
    const lateKey = await writeBatch(store, [row({ requestId: 'way-late', time: at('12:50:00') })]);
    // Other hours and another model: never listed.
    await writeBatch(store, [row({ requestId: 'hour-09', time: at('09:59:59') })]);
    await writeBatch(store, [row({ requestId: 'hour-13', time: at('13:00:00') })]);
    await writeBatch(store, [row({ requestId: 'other-model', model: 'other', time: at('11:00:00') })], 'other');
    // Malformed lines, a row missing its time, an unknown arm, and an empty object.
    const garbage = ['not json', '{"requestId": "bad-time", "rowIndex": 0, "time": "yesterday", "version": 1, "arm": "production", "latencyMs": 1}',
      JSON.stringify(row({ requestId: 'odd-arm', time: at('11:20:00') })).replace('"production"', '"sideways"'), '[1,2]',
      JSON.stringify(row({ requestId: 'in-garbage', time: at('11:20:00') }))].join('\n');
    await store.put(keys.predictionBatch(MODEL, new Date(at('11:20:00')), 'garbage'), garbage + '\n');
    await store.put(keys.predictionBatch(MODEL, new Date(at('11:21:00')), 'empty'), '');

    const dir = join(workDir, 'download-1');
    const window = await downloadPredictionWindow(store, MODEL, FROM, TO, dir);
    expect(window.objects).toBe(6);
    expect(window.skipped).toBe(1);
    expect(window.files).toHaveLength(5);
    expect((await readdir(dir)).sort()).toEqual(window.files.map((f) => f.slice(dir.length + 1)).sort());
    expect(window.files.some((f) => f.endsWith(lateKey.split('/').pop()!))).toBe(false);

    await withConnection(async (conn) => {
      const table = await openPredictionTable(conn, window.files);
      expect(table.rows).toBe(7); // early, in-10, in-11 ×2, in-12, late-12, in-garbage
      expect(table.invalidRows).toBe(4);
      const stats = await armStats(conn, { from: FROM, to: TO, rolloutId: 'ro-1' });
      expect(stats.production.rows).toBe(5);
      expect(stats.production.requests).toBe(4);
    });
  });

  it('gives an empty table when there are no files', async () => {
    await withConnection(async (conn) => {
      expect(await openPredictionTable(conn, [])).toEqual({ rows: 0, invalidRows: 0 });
      const stats = await armStats(conn, { from: FROM, to: TO });
      expect(stats.canary).toMatchObject({ rows: 0, requests: 0, errors: 0, errorRate: 0, latencyP95Ms: null, histogramKind: 'none' });
    });
    const report = await analyzeWindow(new MemoryArtifactStore(), { model: MODEL, from: FROM, to: TO, candidateArm: 'canary', workDir });
    expect(report.comparison.verdict).toBe('insufficient');
    expect(report.files).toBe(0);
    // The temporary download directory is gone.
    expect((await readdir(workDir)).filter((d) => d.startsWith('rollout-analysis-'))).toEqual([]);
  });
});

describe('armStats', () => {
  it('counts rows, requests, errors and latency per arm, within the window and rollout', async () => {
    const store = new MemoryArtifactStore();
    const production = armRows({ arm: 'production', requests: 40, latency: (i) => i + 1, error: (i) => i < 2 });
    // Two rows per canary request; one request's rows both failed.
    const canary = armRows({ arm: 'canary', requests: 10, latency: () => 7, error: (i) => i === 3 }).flatMap((r) => [r, { ...r, rowIndex: 1 }]);
    const outside = [
      row({ requestId: 'before', time: at('10:29:59'), latencyMs: 1000 }),
      row({ requestId: 'at-end', time: at('12:30:00'), latencyMs: 1000 }),
      row({ requestId: 'other-rollout', time: at('11:00:00'), rolloutId: 'ro-2', latencyMs: 1000 }),
    ];
    await writeHourly(store, [...production, ...canary, ...outside]);
    const dir = join(workDir, 'download-2');
    const { files } = await downloadPredictionWindow(store, MODEL, FROM, TO, dir);
    await withConnection(async (conn) => {
      await openPredictionTable(conn, files);
      const stats = await armStats(conn, { rolloutId: 'ro-1', from: FROM, to: TO });
      expect(stats.production).toMatchObject({ arm: 'production', versions: [1], requests: 40, rows: 40, errors: 2, errorRate: 0.05 });
      // Linear interpolation over latencies 1..40: p50 at 19.5 → 20.5, p95 at 37.05 → 38.05.
      expect(stats.production.latencyP50Ms).toBeCloseTo(20.5, 9);
      expect(stats.production.latencyP95Ms).toBeCloseTo(38.05, 9);
      // Errors count requests: the failed request's two rows are one failure.
      expect(stats.canary).toMatchObject({ versions: [2], requests: 10, rows: 20, errors: 1, errorRate: 0.1, latencyP50Ms: 7, latencyP95Ms: 7 });
      expect(stats.challenger.rows).toBe(0);
      expect(stats.production.histogramKind).toBe('probability');
      expect(stats.production.predictionHistogram).toHaveLength(10);
      // 38 successful rows, P("1") = 0.05 + (i % 10) / 10: four or three per bin.
      expect(stats.production.predictionHistogram.reduce((a, b) => a + b, 0)).toBe(38);
      expect(stats.canary.predictionHistogram.reduce((a, b) => a + b, 0)).toBe(18);

      const all = await armStats(conn, { from: new Date(at('10:00:00')), to: new Date(at('13:00:00')) });
      expect(all.production.rows).toBe(43);
    });
  });

  it('counts labels for multi-class models and bins regression outputs on the given edges, or on the deciles of production', async () => {
    const store = new MemoryArtifactStore();
    const three = (label: string): PredictionRecord['output'] => ({ label, probabilities: { a: label === 'a' ? 0.8 : 0.1, b: label === 'b' ? 0.8 : 0.1, c: label === 'c' ? 0.8 : 0.1 } });
    await writeHourly(store, armRows({ arm: 'production', requests: 6, output: (i) => three(['a', 'b', 'c', 'a', 'a', 'b'][i]!) }));
    const { files } = await downloadPredictionWindow(store, MODEL, FROM, TO, join(workDir, 'download-3'));
    await withConnection(async (conn) => {
      await openPredictionTable(conn, files);
      const stats = await armStats(conn, { from: FROM, to: TO });
      expect(stats.production.histogramKind).toBe('label');
      expect(stats.production.histogramBins).toEqual(['a', 'b', 'c']);
      expect(stats.production.predictionHistogram).toEqual([3, 2, 1]);
    });

    const reg = new MemoryArtifactStore();
    await writeHourly(reg, armRows({ arm: 'production', requests: 5, output: (i) => ({ value: [-1, 0, 0.5, 1, 7][i]! }) }));
    const regFiles = await downloadPredictionWindow(reg, MODEL, FROM, TO, join(workDir, 'download-4'));
    await withConnection(async (conn) => {
      await openPredictionTable(conn, regFiles.files);
      // Without edges, production's deciles in the window bin the values (a regression rollout needs no setup).
      const derived = await armStats(conn, { from: FROM, to: TO });
      expect(derived.production.histogramKind).toBe('value');
      expect(derived.production.histogramBins).toHaveLength(10);
      expect(derived.production.predictionHistogram.reduce((a, b) => a + b, 0)).toBe(5);
      expect(derived.production.predictionHistogram[0]).toBe(1);
      const stats = await armStats(conn, { from: FROM, to: TO, regressionEdges: [0, 1] });
      expect(stats.production.histogramKind).toBe('value');
      expect(stats.production.predictionHistogram).toEqual([1, 2, 2]);
    });
  });
});

describe('compareArms', () => {
  const same = (i: number): PredictionRecord['output'] => binary(0.05 + (i % 10) / 10);

  it('is healthy for identical arms', async () => {
    const report = await scenario([{ arm: 'production', requests: 60, output: same }, { arm: 'canary', requests: 60, output: same }]);
    expect(report.comparison.breaches).toEqual([]);
    expect(report.comparison.verdict).toBe('healthy');
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it('is unhealthy for a candidate with 20% errors', async () => {
    const report = await scenario([{ arm: 'production', requests: 60 }, { arm: 'canary', requests: 60, error: (i) => i < 12 }]);
    expect(report.candidate.errorRate).toBeCloseTo(0.2, 12);
    expect(report.comparison.verdict).toBe('unhealthy');
    expect(report.comparison.breaches.map((b) => b.measure)).toEqual(['error_rate']);
    expect(report.comparison.breaches[0]!.bound).toBeCloseTo(0.02, 12);
  });

  it('is unhealthy for a slow candidate', async () => {
    const report = await scenario([{ arm: 'production', requests: 60, latency: () => 20 }, { arm: 'canary', requests: 60, latency: () => 45 }]);
    expect(report.comparison.verdict).toBe('unhealthy');
    expect(report.comparison.breaches).toMatchObject([{ measure: 'latency_p95', baseline: 20, candidate: 45, bound: 30 }]);
  });

  it('ignores sub-millisecond latency noise (0.2 ms vs 0.5 ms)', async () => {
    const report = await scenario([{ arm: 'production', requests: 60, latency: () => 0.2 }, { arm: 'canary', requests: 60, latency: () => 0.5 }]);
    expect(report.candidate.latencyP95Ms).toBeCloseTo(0.5, 12);
    expect(report.comparison.verdict).toBe('healthy');
  });

  it('flags a prediction shift when the candidate always predicts the other class', async () => {
    const report = await scenario([
      { arm: 'production', requests: 60, output: (i) => binary(0.1 + (i % 3) / 10) },
      { arm: 'canary', requests: 60, output: (i) => binary(0.7 + (i % 3) / 10) },
    ]);
    expect(report.comparison.verdict).toBe('unhealthy');
    expect(report.comparison.breaches).toMatchObject([{ measure: 'prediction_shift', bound: 0.1 }]);
    expect(report.comparison.breaches[0]!.candidate).toBeCloseTo(1, 9);
  });

  it('a prediction shift within chance at a few dozen requests is not a breach (permutation test), but is with predictionShiftPValue 1', async () => {
    // Production: 3 requests in each tenth of P(1). Candidate: neighbouring tenths swapped
    // in pairs at both ends, JS divergence 0.12 > 0.1, well within what chance gives at 30 and 30.
    const candidateBins = [0, 0, 0, 0, 0, 0, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 9, 9, 9, 9, 9, 9];
    const arms: ArmSpec[] = [
      { arm: 'production', requests: 30, output: (i) => binary((i % 10) / 10 + 0.05) },
      { arm: 'canary', requests: 30, output: (i) => binary(candidateBins[i]! / 10 + 0.05) },
    ];
    const chance = await scenario(arms);
    expect(chance.comparison.verdict).toBe('healthy');
    expect(chance.comparison.summary).toMatch(/prediction JS divergence 0\.12\d+ but p 0\.\d+ >= 0\.01: within chance at 30 and 30 requests/);

    const divergenceAlone = await scenario(arms, { bounds: { predictionShiftPValue: 1 } });
    expect(divergenceAlone.comparison.verdict).toBe('unhealthy');
    expect(divergenceAlone.comparison.breaches).toMatchObject([{ measure: 'prediction_shift', bound: 0.1 }]);
  });

  it('a 10 % canary that predicts the other class, or a class production never predicts, is a shift however few its rows', async () => {
    const flipped = await scenario([
      { arm: 'production', requests: 300, output: () => binary(0.95) },
      { arm: 'canary', requests: 30, output: () => binary(0.05) },
    ]);
    expect(flipped.comparison.verdict).toBe('unhealthy');
    expect(flipped.comparison.breaches[0]!.message).toMatch(/JS divergence 1\.0000 > 0\.1 \(p 0\.0010 < 0\.01\)/);
    const newClass = await scenario([
      { arm: 'production', requests: 30, output: () => binary(0.95) },
      { arm: 'canary', requests: 30, output: (i) => binary(i < 9 ? 0.05 : 0.95) },
    ]);
    expect(newClass.comparison.verdict).toBe('unhealthy');
    expect(newClass.comparison.breaches.map((b) => b.measure)).toEqual(['prediction_shift']);
  });

  it('one model against itself at 30 requests per arm: about 1 % false shift alarms (71 % on the divergence alone); a real shift mostly caught', () => {
    // Seeded, so the figures are fixed: the README quotes them.
    let seed = 12345;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const skewed = (): number => Math.min(9, Math.floor(10 * rand() ** 3));
    const flat = (): number => Math.min(9, Math.floor(10 * rand()));
    const arm = (name: Arm, n: number, draw: () => number): ArmStats => {
      const predictionHistogram = new Array<number>(10).fill(0);
      for (let i = 0; i < n; i++) predictionHistogram[draw()]!++;
      return { arm: name, versions: [1], requests: n, rows: n, errors: 0, errorRate: 0, latencyP50Ms: 1, latencyP95Ms: 1, histogramKind: 'probability', histogramBins: BINS, predictionHistogram };
    };
    const BINS = Array.from({ length: 10 }, (_, i) => `P(1) in [${i / 10}, ${(i + 1) / 10})`);
    const rate = (trials: number, n: number, candidate: () => number, bounds: RolloutBounds): number => {
      let alarms = 0;
      for (let t = 0; t < trials; t++) if (compareArms(arm('production', n, skewed), arm('canary', n, candidate), bounds).verdict === 'unhealthy') alarms++;
      return alarms / trials;
    };
    const defaults = rolloutBoundsSchema.parse({});
    // Measured: 70.9 %, 1.0 %, 82 %.
    expect(rate(1000, 30, skewed, { ...defaults, predictionShiftPValue: 1 })).toBeGreaterThan(0.6);
    expect(rate(1000, 30, skewed, defaults)).toBeLessThan(0.025);
    expect(rate(300, 60, flat, defaults)).toBeGreaterThan(0.75);
  });

  it('is insufficient below minRequests, unless errors already breach', async () => {
    const few = await scenario([{ arm: 'production', requests: 60 }, { arm: 'canary', requests: 20, latency: () => 500 }]);
    expect(few.comparison.verdict).toBe('insufficient');
    expect(few.comparison.breaches).toEqual([]);
    expect(few.comparison.summary).toMatch(/canary has 20 requests/);

    const failing = await scenario([{ arm: 'production', requests: 60 }, { arm: 'canary', requests: 10, error: (i) => i < 5 }]);
    expect(failing.comparison.verdict).toBe('unhealthy');
    expect(failing.comparison.breaches.map((b) => b.measure)).toEqual(['error_rate']);

    const fourErrors = await scenario([{ arm: 'production', requests: 60 }, { arm: 'canary', requests: 10, error: (i) => i < 4 }]);
    expect(fourErrors.comparison.verdict).toBe('insufficient');

    const lowered = await scenario([{ arm: 'production', requests: 60 }, { arm: 'canary', requests: 20 }], { bounds: { minRequests: 20 } });
    expect(lowered.comparison.verdict).toBe('healthy');
  });

  it('validates bounds', () => {
    expect(rolloutBoundsSchema.parse({})).toEqual({
      minRequests: 30,
      maxErrorRateIncrease: 0.02,
      maxLatencyP95Ratio: 1.5,
      minLatencyIncreaseMs: 5,
      maxPredictionShift: 0.1,
      predictionShiftPValue: 0.01,
    });
    expect(() => rolloutBoundsSchema.parse({ predictionShiftPValue: 0 })).toThrow();
    expect(() => rolloutBoundsSchema.parse({ minRequest: 10 })).toThrow();
    expect(() => rolloutBoundsSchema.parse({ maxLatencyP95Ratio: 0.5 })).toThrow();
  });

  it('refuses histograms with different bins', () => {
    const stats = (bins: string[]): ArmStats => ({
      arm: 'canary', versions: [1], requests: 50, rows: 50, errors: 0, errorRate: 0, latencyP50Ms: 1, latencyP95Ms: 1,
      histogramKind: 'label', histogramBins: bins, predictionHistogram: bins.map(() => 1),
    });
    expect(() => compareArms({ ...stats(['a', 'b', 'c']), arm: 'production' }, stats(['a', 'b']), rolloutBoundsSchema.parse({}))).toThrow(/different bins/);
  });
});

describe('shadowComparison', () => {
  it('pairs shadow rows with the production rows they copy', async () => {
    const store = new MemoryArtifactStore();
    const prod = (id: string, p: number, rowIndex = 0): PredictionRecord =>
      row({ requestId: id, rowIndex, time: at('11:00:00'), rolloutId: undefined, output: binary(p), latencyMs: 10 });
    const shadow = (id: string, p: number | null, rowIndex = 0): PredictionRecord =>
      row({
        requestId: id, rowIndex, time: at('11:00:01'), arm: 'shadow', version: 2, output: p === null ? null : binary(p), latencyMs: 30,
        ...(p === null ? { error: 'shadow model failed' } : {}),
      });
    await writeBatch(store, [prod('r1', 0.8), prod('r2', 0.8), prod('r3', 0.8), prod('r3', 0.2, 1), prod('r5', 0.8)]);
    await writeBatch(store, [
      shadow('r1', 0.8),
      shadow('r2', 0.8),
      shadow('r3', 0.7), // same label, |Δp| = 0.1
      shadow('r3', 0.7, 1), // other label, |Δp| = 0.5
      shadow('r5', null),
      shadow('r-unmatched', 0.8),
      { ...shadow('r1', 0.1), rolloutId: 'ro-2' },
    ]);
    const { files } = await downloadPredictionWindow(store, MODEL, FROM, TO, join(workDir, 'download-5'));
    await withConnection(async (conn) => {
      await openPredictionTable(conn, files);
      const result = await shadowComparison(conn, { rolloutId: 'ro-1', from: FROM, to: TO });
      expect(result).toMatchObject({
        kind: 'classification',
        pairs: 5,
        comparablePairs: 4,
        unmatchedShadowRows: 1,
        agreement: 0.75,
        meanAbsDiff: null,
        shadowRows: 6,
        shadowErrors: 1,
        productionLatencyP95Ms: 10,
        shadowLatencyP95Ms: 30,
      });
      expect(result.shadowErrorRate).toBeCloseTo(1 / 6, 12);
      expect(result.meanAbsProbabilityDiff).toBeCloseTo(0.15, 12);
    });

    const report = await analyzeWindow(store, { model: MODEL, rolloutId: 'ro-1', from: FROM, to: TO, candidateArm: 'shadow', workDir });
    expect(report.shadow?.agreement).toBe(0.75);
  });

  it('judges a shadow against production on the requests it copied, not on all of production', async () => {
    const store = new MemoryArtifactStore();
    // Production: 100 requests, the first 50 confident "0", the rest confident "1". The shadow
    // copied only the first 50 (the others were skipped) and agrees with every one of them.
    const production = Array.from({ length: 100 }, (_, i) => row({ requestId: `p${i}`, time: at(`11:${String(10 + Math.floor(i / 5)).padStart(2, '0')}:00`), output: binary(i < 50 ? 0.1 : 0.9) }));
    const copies = production.slice(0, 50).map((r) => ({ ...r, arm: 'shadow' as const, version: 2 }));
    await writeHourly(store, [...production, ...copies]);
    const report = await analyzeWindow(store, { model: MODEL, rolloutId: 'ro-1', from: FROM, to: TO, candidateArm: 'shadow', workDir, bounds: { minRequests: 10 } });
    expect(report.baseline.requests).toBe(50);
    expect(report.comparison.breaches).toEqual([]);
    expect(report.comparison.verdict).toBe('healthy');
    expect(report.shadow?.agreement).toBe(1);
  });

  it('compares regression outputs within a relative tolerance', async () => {
    const store = new MemoryArtifactStore();
    const values: Array<[number, number]> = [[100, 100 * (1 + 5e-7)], [0, 0], [2, 2.1], [-3, -3]];
    await writeBatch(store, [
      ...values.map(([p], i) => row({ requestId: `q${i}`, output: { value: p } })),
      ...values.map(([, s], i) => row({ requestId: `q${i}`, arm: 'shadow', output: { value: s } })),
    ]);
    const { files } = await downloadPredictionWindow(store, MODEL, FROM, TO, join(workDir, 'download-6'));
    await withConnection(async (conn) => {
      await openPredictionTable(conn, files);
      const result = await shadowComparison(conn, { rolloutId: 'ro-1', from: FROM, to: TO });
      expect(result.kind).toBe('regression');
      expect(result.agreement).toBe(0.75);
      expect(result.meanAbsDiff).toBeCloseTo((100 * 5e-7 + 0.1) / 4, 9);
    });
  });
});
