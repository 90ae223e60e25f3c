import { ApplicationFailure } from '@temporalio/activity';
import { ErrorType } from '../src/shared/errors.js';
import { DataError } from '../src/data/load.js';
import { ArtifactIntegrityError, InputValidationError, ModelSignatureError } from '../src/eval/onnx-model.js';
import { InvalidNameError } from '../src/store/keys.js';
import { NoProductionVersionError } from '../src/monitoring/monitor.js';

/**
 * Turns known "will never succeed" errors into non-retryable failures with a
 * stable type; anything else is rethrown and retried by the activity's preset.
 */
export function classify(err: unknown): unknown {
  if (err instanceof ApplicationFailure) return err;
  if (err instanceof DataError) {
    return ApplicationFailure.create({ type: ErrorType.DataValidation, message: err.message, nonRetryable: true, details: [err.failures] });
  }
  if (err instanceof ArtifactIntegrityError) {
    return ApplicationFailure.create({ type: ErrorType.ArtifactIntegrity, message: err.message, nonRetryable: true });
  }
  if (err instanceof ModelSignatureError) {
    return ApplicationFailure.create({ type: ErrorType.TrainerOutput, message: err.message, nonRetryable: true });
  }
  if (err instanceof InputValidationError) {
    return ApplicationFailure.create({ type: ErrorType.DataValidation, message: err.message, nonRetryable: true });
  }
  // Retried for as long as a store outage lasts elsewhere, but a model with nothing deployed stays so.
  if (err instanceof NoProductionVersionError) {
    return ApplicationFailure.create({ type: ErrorType.NoProductionVersion, message: err.message, nonRetryable: true });
  }
  if (err instanceof InvalidNameError) {
    return ApplicationFailure.create({ type: ErrorType.InvalidName, message: err.message, nonRetryable: true });
  }
  return err;
}

export async function classified<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw classify(err);
  }
}
