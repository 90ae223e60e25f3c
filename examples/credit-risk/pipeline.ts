import { definePipeline } from 'conveyor';

/**
 * Credit-risk default prediction: a scikit-learn pipeline exported to ONNX,
 * gated on ROC AUC and on not being worse than the model in production.
 */
export default definePipeline({
  name: 'credit-risk',
  description: 'Probability that a loan applicant defaults within the loan term.',
  dataset: { source: './data/credit-risk.csv' },
  target: { column: 'default', task: 'classification' },
  schema: {
    columns: {
      age: { type: 'integer', min: 18, max: 100 },
      income: { type: 'float', min: 0 },
      loan_amount: { type: 'float', min: 0 },
      loan_term_months: { type: 'integer', min: 1, max: 480 },
      credit_score: { type: 'integer', min: 300, max: 850 },
      employment_years: { type: 'float', nullable: true, min: 0 },
      num_open_accounts: { type: 'integer', min: 0 },
      debt_to_income: { type: 'float', min: 0 },
      home_ownership: { type: 'categorical', values: ['RENT', 'OWN', 'MORTGAGE'] },
      purpose: { type: 'categorical' },
      region: { type: 'categorical' },
      default: { type: 'integer', values: ['0', '1'] },
    },
  },
  expectations: [
    { rule: 'row_count', min: 500 },
    { rule: 'max_null_fraction', column: 'employment_years', max: 0.1 },
    { rule: 'mean_between', column: 'default', min: 0.05, max: 0.5 },
  ],
  split: { holdoutFraction: 0.25, seed: 7 },
  trainer: {
    kind: 'command',
    command: ['{python}', './trainers/train_sklearn.py'],
    params: { algorithm: 'logistic_regression', C: 1.0 },
    timeout: '30m',
    heartbeatTimeout: '1m',
    retries: 2,
  },
  evaluation: {
    primaryMetric: 'roc_auc',
    gates: [
      { metric: 'roc_auc', min: 0.7 },
      { metric: 'log_loss', max: 0.6 },
    ],
    beatProduction: { metric: 'roc_auc', minDelta: -0.01 },
    slices: ['region'],
  },
  approval: { mode: 'auto' },
  deployment: { alias: 'production', strategy: 'direct' },
});
