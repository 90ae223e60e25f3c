import { definePipeline } from 'conveyor';
import base from './pipeline.js';

/**
 * The same problem with LightGBM (converted to ONNX through onnxmltools), as its
 * own model so both can be compared side by side in the registry.
 */
export default definePipeline({
  ...base.spec,
  name: 'credit-risk-lgbm',
  dataset: { source: './data/credit-risk.csv' },
  trainer: {
    kind: 'command',
    command: ['{python}', './trainers/train_lightgbm.py'],
    params: { n_estimators: 200, learning_rate: 0.05, num_leaves: 15 },
    timeout: '30m',
    heartbeatTimeout: '1m',
    retries: 2,
  },
  expectations: [...base.spec.expectations, { rule: 'custom', check: 'loan_within_income' }],
});
