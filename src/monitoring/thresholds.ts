import { z } from 'zod';

/** Drift thresholds, apart from the DuckDB code that applies them, so the pipeline spec can use them. */
/** A threshold of null turns that measure's check off. */
const measureThresholdsSchema = z
  .object({
    psi: z.number().nonnegative().nullable(),
    ks: z.number().min(0).max(1).nullable(),
    /** Breach when the KS p-value falls below this; off by default (at large samples every shift is significant). */
    ksPValue: z.number().min(0).max(1).nullable(),
    js: z.number().min(0).max(1).nullable(),
    chi2PValue: z.number().min(0).max(1).nullable(),
    /** Increase of the null rate over the reference's, in absolute terms (0.05 = 5 points). */
    nullRateIncrease: z.number().min(0).max(1).nullable(),
    outOfRange: z.number().min(0).max(1).nullable(),
    unseen: z.number().min(0).max(1).nullable(),
    /** Breach when a feature that varied in the reference holds a single value. */
    constant: z.boolean(),
  })
  .strict()
  .partial();

export const driftThresholdsSchema = z
  .object({
    /** Rows in the window below which no verdict is given; also the per-feature minimum of non-null values for distribution measures. */
    minSamples: z.number().int().positive().default(200),
    /** Overrides of the defaults for every feature. */
    defaults: measureThresholdsSchema.default({}),
    /** Per-feature overrides, on top of `defaults`. */
    features: z.record(z.string(), measureThresholdsSchema).default({}),
    /** Overrides for the prediction column, on top of `defaults`. */
    prediction: measureThresholdsSchema.default({}),
  })
  .strict();

export type MeasureThresholds = z.infer<typeof measureThresholdsSchema>;
export type DriftThresholds = z.infer<typeof driftThresholdsSchema>;
export type DriftThresholdsInput = z.input<typeof driftThresholdsSchema>;
export type ResolvedThresholds = { [K in keyof MeasureThresholds]-?: Exclude<MeasureThresholds[K], undefined> };

export const DEFAULT_THRESHOLDS: ResolvedThresholds = {
  psi: 0.2,
  ks: 0.1,
  ksPValue: null,
  js: 0.1,
  chi2PValue: 0.01,
  nullRateIncrease: 0.05,
  outOfRange: 0.05,
  unseen: 0.05,
  constant: true,
};

