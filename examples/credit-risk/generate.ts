/**
 * Seeded, deterministic generator of a synthetic tabular credit-risk dataset
 * (binary classification, target `default`).
 *
 *   npx tsx examples/credit-risk/generate.ts --rows 5000 --seed 7 \
 *     [--drift income|credit_score|region|all] [--no-target] [--out path.csv]
 *
 * Every row consumes the same sequence of random draws whatever the drift or
 * includeTarget options, so the same seed yields the same underlying population
 * and the drifted/no-target variants differ only where the option says so.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { mulberry32 } from '../../src/shared/random.js';

export const DriftKind = {
  Income: 'income',
  CreditScore: 'credit_score',
  Region: 'region',
  All: 'all',
} as const;
export type DriftKind = (typeof DriftKind)[keyof typeof DriftKind];

export const DRIFT_KINDS: readonly DriftKind[] = Object.values(DriftKind);

export const COLUMNS = [
  'age',
  'income',
  'loan_amount',
  'loan_term_months',
  'credit_score',
  'employment_years',
  'num_open_accounts',
  'debt_to_income',
  'home_ownership',
  'purpose',
  'region',
  'default',
] as const;

export type CreditRiskRow = Record<string, string | number | null>;

export interface GenerateOptions {
  rows: number;
  seed: number;
  drift?: DriftKind | undefined;
  includeTarget?: boolean;
}

const HOME_OWNERSHIP = ['RENT', 'OWN', 'MORTGAGE'] as const;
const PURPOSES = ['debt_consolidation', 'credit_card', 'home_improvement', 'car', 'medical', 'other'] as const;
const PURPOSE_WEIGHTS = [0.38, 0.22, 0.12, 0.1, 0.06, 0.12];
const PURPOSE_RISK: Record<string, number> = {
  debt_consolidation: 0.2,
  credit_card: 0.1,
  home_improvement: -0.15,
  car: -0.25,
  medical: 0.45,
  other: 0.05,
};
const REGIONS = ['north', 'south', 'east', 'west'] as const;
const REGION_WEIGHTS = [0.27, 0.3, 0.2, 0.23];
const REGION_WEIGHTS_DRIFTED = [0.1, 0.1, 0.08, 0.72];
const TERMS = [12, 24, 36, 48, 60] as const;

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  uniform(): number {
    return this.next();
  }
  /** Box-Muller; always consumes exactly two uniforms. */
  normal(mean = 0, sd = 1): number {
    const u1 = this.next() || Number.MIN_VALUE;
    const u2 = this.next();
    return mean + sd * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  /** Always consumes one uniform, so weights may change without shifting later draws. */
  pick<T>(items: readonly T[], weights: readonly number[]): T {
    const total = weights.reduce((s, w) => s + w, 0);
    let u = this.next() * total;
    for (let i = 0; i < items.length; i++) {
      u -= weights[i] ?? 0;
      if (u < 0) return items[i] as T;
    }
    return items[items.length - 1] as T;
  }
}

const clamp = (x: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, x));
const round = (x: number, digits: number): number => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};
const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

export function generateCreditRisk(opts: GenerateOptions): CreditRiskRow[] {
  const { rows, seed, drift, includeTarget = true } = opts;
  if (!Number.isInteger(rows) || rows < 0) throw new Error(`rows must be a non-negative integer, got ${rows}`);
  if (drift !== undefined && !DRIFT_KINDS.includes(drift)) throw new Error(`unknown drift kind: ${String(drift)}`);
  const driftIncome = drift === DriftKind.Income || drift === DriftKind.All;
  const driftScore = drift === DriftKind.CreditScore || drift === DriftKind.All;
  const driftRegion = drift === DriftKind.Region || drift === DriftKind.All;

  const rng = new Rng(seed);
  const out: CreditRiskRow[] = [];
  for (let i = 0; i < rows; i++) {
    const age = Math.round(clamp(rng.normal(42, 13), 18, 80));
    const empRaw = Math.min(age - 18, Math.max(0, rng.normal(0.15 * (age - 18), 4)));
    const employmentMissing = rng.uniform() < 0.02;

    const trueIncome = Math.exp(rng.normal(Math.log(52000) + 0.008 * (age - 42) + 0.02 * empRaw, 0.45));
    const income = driftIncome ? trueIncome * 0.6 : trueIncome;

    const pRent = clamp(0.65 - 0.012 * (age - 18), 0.15, 0.65);
    const home = rng.pick(HOME_OWNERSHIP, [pRent, 0.2, 0.8 - pRent]);
    const purpose = rng.pick(PURPOSES, PURPOSE_WEIGHTS);
    const region = rng.pick(REGIONS, driftRegion ? REGION_WEIGHTS_DRIFTED : REGION_WEIGHTS);

    const trueScore = Math.round(
      clamp(rng.normal(665 + 1.1 * (age - 42) + 45 * Math.log(trueIncome / 52000) + (home === 'RENT' ? -15 : 10), 65), 300, 850),
    );
    const creditScore = driftScore ? Math.round(clamp(trueScore - 80, 300, 850)) : trueScore;

    const openAccounts = Math.max(0, Math.round(rng.normal(5 + 0.03 * (age - 42), 2.5)));
    // Loans are sized relative to (true) income, so an income drift also shows in the loan/income ratio.
    const loanAmount = clamp(Math.exp(rng.normal(Math.log(0.22 * trueIncome), 0.55)), 500, 150000);
    const termDraw = rng.uniform();
    const termIdx = clamp(Math.floor(termDraw * 3 + Math.log(loanAmount / 5000)), 0, TERMS.length - 1);
    const term = TERMS[termIdx] as number;
    const dti = clamp(rng.normal(0.18 + 0.45 * (loanAmount / trueIncome) + 0.012 * openAccounts, 0.1), 0, 1.5);

    const noise = rng.normal(0, 0.35);
    const labelDraw = rng.uniform();

    let logit =
      -1.8 +
      -0.0135 * (trueScore - 665) +
      3.0 * (dti - 0.32) +
      -0.45 * Math.log(trueIncome / 52000) +
      0.35 * Math.log(loanAmount / (0.22 * trueIncome)) +
      -0.05 * empRaw +
      0.045 * (openAccounts - 5) +
      (age < 25 ? 0.35 : 0) +
      (term === 60 ? 0.3 : term === 48 ? 0.15 : 0) +
      (home === 'RENT' ? 0.25 : home === 'OWN' ? -0.2 : 0) +
      (PURPOSE_RISK[purpose] ?? 0) +
      (region === 'south' ? 0.15 : region === 'east' ? -0.1 : 0) +
      noise;
    // Concept drift on top of the covariate shifts, so a model trained on
    // undrifted data loses discrimination rather than only calibration.
    if (driftIncome) logit += 0.9 * Math.log(trueIncome / 52000) - 0.4 * (dti - 0.32);
    if (driftScore) logit += 0.006 * (trueScore - 665);
    if (driftRegion && region === 'west') logit += purpose === 'credit_card' || purpose === 'other' ? 1.2 : 0.5;

    const row: CreditRiskRow = {
      age,
      income: round(income, 2),
      loan_amount: round(loanAmount, 2),
      loan_term_months: term,
      credit_score: creditScore,
      employment_years: employmentMissing ? null : round(empRaw, 1),
      num_open_accounts: openAccounts,
      debt_to_income: round(dti, 3),
      home_ownership: home,
      purpose,
      region,
    };
    if (includeTarget) row.default = labelDraw < sigmoid(logit) ? 1 : 0;
    out.push(row);
  }
  return out;
}

function csvCell(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return '';
  const s = String(value);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** RFC 4180 CSV with a header; null becomes an empty cell. Columns follow the first row's key order. */
export function toCsv(rows: readonly CreditRiskRow[]): string {
  const first = rows[0];
  if (!first) return '';
  const header = Object.keys(first);
  const lines = [header.map(csvCell).join(',')];
  for (const row of rows) lines.push(header.map((h) => csvCell(row[h])).join(','));
  return lines.join('\n') + '\n';
}

function parseIntArg(name: string, value: string): number {
  if (!/^\d+$/.test(value)) throw new Error(`--${name} must be a non-negative integer, got "${value}"`);
  return Number(value);
}

function main(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: {
      rows: { type: 'string', default: '5000' },
      seed: { type: 'string', default: '7' },
      drift: { type: 'string' },
      'no-target': { type: 'boolean', default: false },
      out: { type: 'string' },
    },
    strict: true,
  });
  const drift = values.drift;
  if (drift !== undefined && !(DRIFT_KINDS as readonly string[]).includes(drift)) {
    throw new Error(`--drift must be one of ${DRIFT_KINDS.join('|')}, got "${drift}"`);
  }
  const csv = toCsv(
    generateCreditRisk({
      rows: parseIntArg('rows', values.rows),
      seed: parseIntArg('seed', values.seed),
      drift: drift as DriftKind | undefined,
      includeTarget: !values['no-target'],
    }),
  );
  if (values.out) {
    mkdirSync(dirname(values.out), { recursive: true });
    writeFileSync(values.out, csv);
  } else {
    process.stdout.write(csv);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exit(2);
  }
}
