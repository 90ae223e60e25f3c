import { describe, expect, it } from 'vitest';
import { evaluateGates } from '../../src/eval/gates.js';
import type { MetricName } from '../../src/eval/metrics.js';

describe('evaluateGates: absolute gates', () => {
  it('passes when every bound holds, with readable gate names', () => {
    const report = evaluateGates({
      metrics: { roc_auc: 0.82, log_loss: 0.41 },
      gates: [
        { metric: 'roc_auc', min: 0.7 },
        { metric: 'log_loss', max: 0.5 },
      ],
    });
    expect(report.passed).toBe(true);
    expect(report.results).toEqual([
      { gate: 'roc_auc >= 0.7', metric: 'roc_auc', actual: 0.82, threshold: 0.7, passed: true },
      { gate: 'log_loss <= 0.5', metric: 'log_loss', actual: 0.41, threshold: 0.5, passed: true },
    ]);
  });

  it('treats bounds as inclusive', () => {
    const report = evaluateGates({ metrics: { f1: 0.7 }, gates: [{ metric: 'f1', min: 0.7, max: 0.7 }] });
    expect(report.passed).toBe(true);
    expect(report.results.map((r) => r.gate)).toEqual(['f1 >= 0.7', 'f1 <= 0.7']);
  });

  it('fails a violated bound with a reason', () => {
    const report = evaluateGates({ metrics: { rmse: 12.5 }, gates: [{ metric: 'rmse', max: 10 }] });
    expect(report.passed).toBe(false);
    expect(report.results[0]).toMatchObject({ passed: false, actual: 12.5, threshold: 10 });
    expect(report.results[0]!.reason).toMatch(/rmse = 12.5, required <= 10/);
  });

  it('fails a null or missing metric with a reason', () => {
    const report = evaluateGates({
      metrics: { roc_auc: null },
      gates: [
        { metric: 'roc_auc', min: 0.7 },
        { metric: 'precision', min: 0.5 },
      ],
    });
    expect(report.passed).toBe(false);
    for (const r of report.results) {
      expect(r.passed).toBe(false);
      expect(r.actual).toBeNull();
      expect(r.reason).toMatch(/not available/);
    }
  });

  it('passes with no gates at all', () => {
    expect(evaluateGates({ metrics: {}, gates: [] })).toEqual({ passed: true, results: [] });
  });

  it('rejects a gate without bounds or with an unknown metric', () => {
    expect(() => evaluateGates({ metrics: { f1: 1 }, gates: [{ metric: 'f1' }] })).toThrow(/needs min or max/);
    expect(() =>
      evaluateGates({ metrics: {}, gates: [{ metric: 'bogus' as MetricName, min: 1 }] }),
    ).toThrow(/unknown metric "bogus"/);
  });
});

describe('evaluateGates: beatProduction', () => {
  it('passes without a production model', () => {
    for (const productionMetrics of [null, undefined]) {
      const report = evaluateGates({
        metrics: { roc_auc: 0.6 },
        gates: [],
        beatProduction: { metric: 'roc_auc', minDelta: 0.01 },
        productionMetrics,
      });
      expect(report.passed).toBe(true);
      expect(report.results[0]).toMatchObject({ passed: true, reason: 'no production model', threshold: 0.01 });
    }
  });

  it('requires higher-is-better metrics to increase by minDelta', () => {
    const run = (candidate: number) =>
      evaluateGates({
        metrics: { roc_auc: candidate },
        gates: [],
        beatProduction: { metric: 'roc_auc', minDelta: 0.01 },
        productionMetrics: { roc_auc: 0.8 },
      });
    // 0.81 - 0.8 is 0.010000000000000009 in floating point; exactly-at-threshold passes.
    expect(run(0.81).passed).toBe(true);
    expect(run(0.81).results[0]!.actual).toBeCloseTo(0.01, 12);
    expect(run(0.805).passed).toBe(false);
    expect(run(0.79).passed).toBe(false);
    expect(run(0.79).results[0]!.gate).toBe('roc_auc beats production by >= 0.01 (higher is better)');
  });

  it('requires lower-is-better metrics to decrease by minDelta', () => {
    const run = (candidate: number) =>
      evaluateGates({
        metrics: { log_loss: candidate },
        gates: [],
        beatProduction: { metric: 'log_loss', minDelta: 0.02 },
        productionMetrics: { log_loss: 0.5 },
      });
    expect(run(0.48).passed).toBe(true);
    expect(run(0.48).results[0]!.actual).toBeCloseTo(0.02, 12);
    expect(run(0.49).passed).toBe(false);
    expect(run(0.49).results[0]!.gate).toBe('log_loss beats production by >= 0.02 (lower is better)');
    // A higher loss is worse even though the raw difference is positive.
    expect(run(0.6).passed).toBe(false);
    expect(run(0.6).results[0]!.actual).toBeCloseTo(-0.1, 12);
  });

  it('allows a zero or negative minDelta (no-regression / tolerance)', () => {
    const report = evaluateGates({
      metrics: { rmse: 10.5 },
      gates: [],
      beatProduction: { metric: 'rmse', minDelta: -1 },
      productionMetrics: { rmse: 10 },
    });
    expect(report.passed).toBe(true);
  });

  it('fails when the candidate metric is null and combines with absolute gates', () => {
    const report = evaluateGates({
      metrics: { accuracy: 0.9, f1: null },
      gates: [{ metric: 'accuracy', min: 0.8 }],
      beatProduction: { metric: 'f1', minDelta: 0 },
      productionMetrics: { f1: 0.5 },
    });
    expect(report.passed).toBe(false);
    expect(report.results.map((r) => r.passed)).toEqual([true, false]);
    expect(report.results[1]!.reason).toMatch(/f1 is not available for the candidate/);
  });

  it('passes with a reason when production lacks the metric', () => {
    const report = evaluateGates({
      metrics: { mae: 1 },
      gates: [],
      beatProduction: { metric: 'mae', minDelta: 0.1 },
      productionMetrics: { rmse: 2 },
    });
    expect(report.passed).toBe(true);
    expect(report.results[0]!.reason).toMatch(/production model has no mae/);
  });
});
