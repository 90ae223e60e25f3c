import { describe, expect, it } from 'vitest';
import {
  METRICS_BY_TASK,
  METRIC_DIRECTION,
  classificationMetrics,
  isHigherBetter,
  regressionMetrics,
  rocAuc,
  sliceMetrics,
} from '../../src/eval/metrics.js';

// Binary case. Scores tie at 0.4 across one positive and two negatives.
const yBin = [0, 0, 1, 1, 0, 1, 1, 0, 1, 0];
const p1 = [0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.4, 0.2, 0.65, 0.7];
const probaBin = p1.flatMap((p) => [1 - p, p]);

// Multiclass case with string labels.
const yMulti = ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'c'];
const probaMulti = [
  [0.7, 0.2, 0.1],
  [0.3, 0.4, 0.3],
  [0.2, 0.2, 0.6],
  [0.3, 0.5, 0.2],
  [0.1, 0.8, 0.1],
  [0.5, 0.3, 0.2],
  [0.6, 0.3, 0.1],
  [0.2, 0.3, 0.5],
].flat();

describe('rocAuc', () => {
  it('matches the textbook example', () => {
    // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    expect(rocAuc([false, false, true, true], [0.1, 0.4, 0.35, 0.8])).toBeCloseTo(0.75, 12);
  });

  it('counts ties as half (average ranks)', () => {
    // Hand-computed: all four pairs tie -> 0.5; one tie of two pairs -> (1 + 0.5) / 2.
    expect(rocAuc([true, false, true, false], [0.5, 0.5, 0.5, 0.5])).toBe(0.5);
    expect(rocAuc([true, false, false], [0.5, 0.5, 0.1])).toBe(0.75);
  });

  it('is null when only one class is present or a score is not finite', () => {
    expect(rocAuc([true, true], [0.1, 0.9])).toBeNull();
    expect(rocAuc([false, false], [0.1, 0.9])).toBeNull();
    expect(rocAuc([true, false], [NaN, 0.2])).toBeNull();
  });
});

describe('classificationMetrics (binary)', () => {
  it('matches scikit-learn', () => {
    const m = classificationMetrics(yBin, probaBin, [0, 1]);
    // Reference values from sklearn.metrics 1.9.1 (accuracy_score, precision_score, recall_score,
    // f1_score, roc_auc_score, log_loss, confusion_matrix) on the same inputs.
    expect(m.accuracy).toBeCloseTo(0.7, 12);
    expect(m.precision).toBeCloseTo(0.75, 12);
    expect(m.recall).toBeCloseTo(0.6, 12);
    expect(m.f1).toBeCloseTo(0.6666666666666666, 12);
    expect(m.roc_auc).toBeCloseTo(0.76, 12);
    expect(m.log_loss).toBeCloseTo(0.5279527958267277, 12);
    expect(m.confusion_matrix).toEqual({ labels: [0, 1], matrix: [[4, 1], [2, 3]] });
    expect(m.support).toBe(10);
  });

  it('accepts Float32Array probabilities', () => {
    const m = classificationMetrics(yBin, Float32Array.from(probaBin), [0, 1]);
    expect(m.roc_auc).toBeCloseTo(0.76, 6);
    expect(m.log_loss).toBeCloseTo(0.5279527958267277, 6);
  });

  it('uses the second class as positive and explicit predictions when given', () => {
    // Positive class "yes"; predictions all "yes": TP=2, FP=2, FN=0.
    const m = classificationMetrics(['no', 'yes', 'no', 'yes'], [0.6, 0.4, 0.7, 0.3, 0.2, 0.8, 0.1, 0.9], ['no', 'yes'], [
      'yes',
      'yes',
      'yes',
      'yes',
    ]);
    expect(m.precision).toBe(0.5);
    expect(m.recall).toBe(1);
    expect(m.f1).toBeCloseTo(2 / 3, 12);
    expect(m.accuracy).toBe(0.5);
    expect(m.confusion_matrix.matrix).toEqual([[0, 2], [0, 2]]);
  });

  it('clips probabilities for log loss', () => {
    // Hand-computed: one row with p(true) = 0 -> -ln(1e-15); one with p(true) = 1 -> -ln(1 - 1e-15).
    const m = classificationMetrics([1, 0], [1, 0, 1, 0], [0, 1]);
    const expected = (-Math.log(1e-15) - Math.log(1 - 1e-15)) / 2;
    expect(m.log_loss).toBeCloseTo(expected, 10);
    expect(Number.isFinite(m.log_loss)).toBe(true);
  });

  it('returns null (never NaN) for undefined metrics', () => {
    // Only negatives, all predicted negative: no AUC, no predicted positives, no actual positives.
    const m = classificationMetrics([0, 0, 0], [0.9, 0.1, 0.8, 0.2, 0.7, 0.3], [0, 1]);
    expect(m.roc_auc).toBeNull();
    expect(m.precision).toBeNull();
    expect(m.recall).toBeNull();
    expect(m.f1).toBeNull();
    expect(m.accuracy).toBe(1);

    const empty = classificationMetrics([], [], [0, 1]);
    expect(empty).toMatchObject({ accuracy: null, precision: null, recall: null, f1: null, roc_auc: null, log_loss: null });
    expect(empty.support).toBe(0);

    const noPredictedPositive = classificationMetrics([0, 1], [0.9, 0.1, 0.8, 0.2], [0, 1]);
    expect(noPredictedPositive.precision).toBeNull();
    expect(noPredictedPositive.recall).toBe(0);
    expect(noPredictedPositive.f1).toBe(0);
  });

  it('matches labels by string form and rejects unknown labels', () => {
    const m = classificationMetrics(['0', '1'], [0.9, 0.1, 0.2, 0.8], [0, 1]);
    expect(m.accuracy).toBe(1);
    expect(() => classificationMetrics([2], [0.5, 0.5], [0, 1])).toThrow(/label 2 at row 0/);
    expect(() => classificationMetrics([0, 1], [0.5, 0.5], [0, 1])).toThrow(/expected 2 rows x 2 classes/);
  });
});

describe('classificationMetrics (multiclass)', () => {
  it('matches scikit-learn macro averages and one-vs-rest AUC', () => {
    const m = classificationMetrics(yMulti, probaMulti, ['a', 'b', 'c']);
    // Reference values from sklearn.metrics 1.9.1: precision/recall/f1 with average='macro',
    // roc_auc_score(multi_class='ovr', average='macro'), log_loss, confusion_matrix.
    expect(m.accuracy).toBeCloseTo(0.75, 12);
    expect(m.precision).toBeCloseTo(0.7777777777777777, 12);
    expect(m.recall).toBeCloseTo(0.7777777777777777, 12);
    expect(m.f1).toBeCloseTo(0.7555555555555555, 12);
    expect(m.roc_auc).toBeCloseTo(0.9055555555555556, 12);
    expect(m.log_loss).toBeCloseTo(0.7530397964973825, 12);
    expect(m.confusion_matrix).toEqual({
      labels: ['a', 'b', 'c'],
      matrix: [
        [2, 1, 0],
        [0, 2, 0],
        [1, 0, 2],
      ],
    });
  });

  it('averages AUC over classes present in yTrue only', () => {
    // Class "c" never occurs: its one-vs-rest AUC is undefined and skipped.
    // Hand-computed: AUC(a) = 1 (a-scores 0.8, 0.7 vs 0.1, 0.2), AUC(b) = 1 -> macro 1.
    const proba = [0.8, 0.1, 0.1, 0.7, 0.2, 0.1, 0.1, 0.8, 0.1, 0.2, 0.7, 0.1];
    const m = classificationMetrics(['a', 'a', 'b', 'b'], proba, ['a', 'b', 'c']);
    expect(m.roc_auc).toBe(1);
    expect(m.precision).toBe(1);
  });
});

describe('regressionMetrics', () => {
  it('matches scikit-learn', () => {
    // sklearn.metrics root_mean_squared_error / mean_absolute_error / r2_score on the docs example.
    const m = regressionMetrics([3, -0.5, 2, 7], [2.5, 0, 2, 8]);
    expect(m.rmse).toBeCloseTo(0.6123724356957945, 12);
    expect(m.mae).toBeCloseTo(0.5, 12);
    expect(m.r2).toBeCloseTo(0.9486081370449679, 12);
    expect(m.support).toBe(4);
  });

  it('returns null r2 for constant targets and nulls for no rows', () => {
    const m = regressionMetrics([2, 2, 2], [1, 2, 3]);
    expect(m.r2).toBeNull();
    expect(m.rmse).toBeCloseTo(Math.sqrt(2 / 3), 12);
    expect(m.mae).toBeCloseTo(2 / 3, 12);
    expect(regressionMetrics([], [])).toEqual({ rmse: null, mae: null, r2: null, support: 0 });
  });

  it('accepts typed-array predictions and rejects length mismatch', () => {
    expect(regressionMetrics([1, 2], Float64Array.from([1, 2])).rmse).toBe(0);
    expect(() => regressionMetrics([1, 2], [1])).toThrow(/expected 2/);
  });
});

describe('metric directions', () => {
  it('marks loss-like metrics lower-is-better', () => {
    expect(METRIC_DIRECTION.log_loss).toBe('lower');
    expect(METRIC_DIRECTION.rmse).toBe('lower');
    expect(METRIC_DIRECTION.mae).toBe('lower');
    expect(isHigherBetter('roc_auc')).toBe(true);
    expect(isHigherBetter('r2')).toBe(true);
    for (const m of [...METRICS_BY_TASK.classification, ...METRICS_BY_TASK.regression]) {
      expect(METRIC_DIRECTION[m]).toMatch(/^(higher|lower)$/);
    }
  });
});

describe('sliceMetrics', () => {
  it('computes per-slice classification metrics and skips small slices', () => {
    const slices = ['x', 'x', 'x', 'x', 'x', 'y', 'y', 'y', 'y', 'y'];
    const report = sliceMetrics(slices, { task: 'classification', yTrue: yBin, proba: probaBin, classes: [0, 1] }, {
      minSupport: 5,
    });
    expect(report.skipped).toEqual([]);
    expect(report.slices.map((s) => [s.value, s.support])).toEqual([
      ['x', 5],
      ['y', 5],
    ]);
    const x = classificationMetrics(yBin.slice(0, 5), probaBin.slice(0, 10), [0, 1]);
    expect(report.slices[0]!.metrics).toEqual(x);
    // Hand-computed for "y": y=[1,1,0,1,0], p1=[0.9,0.4,0.2,0.65,0.7]; positives beat negatives in 4 of 6 pairs.
    expect(report.slices[1]!.metrics.roc_auc).toBeCloseTo(4 / 6, 12);
  });

  it('uses a default minSupport of 30 and groups missing values', () => {
    const yTrue = Array.from({ length: 40 }, (_, i) => i);
    const yPred = yTrue.map((y) => y + 1);
    const slices = yTrue.map((i) => (i < 32 ? 'big' : i < 36 ? null : ''));
    const report = sliceMetrics(slices, { task: 'regression', yTrue, yPred });
    expect(report.slices).toHaveLength(1);
    expect(report.slices[0]).toMatchObject({ value: 'big', support: 32, metrics: { rmse: 1, mae: 1, support: 32 } });
    expect(report.skipped).toEqual([{ value: '__missing__', support: 8 }]);
  });

  it('rejects a slice column of the wrong length', () => {
    expect(() => sliceMetrics(['a'], { task: 'regression', yTrue: [1, 2], yPred: [1, 2] })).toThrow(/expected 2/);
  });
});
