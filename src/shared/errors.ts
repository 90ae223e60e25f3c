/**
 * Error types shared by workflows, activities and clients. Failures with these
 * `type`s are non-retryable: retrying bad data or a refused approval cannot help.
 * Everything else (network, MinIO down, a crashed trainer) is retried per preset.
 */
export const ErrorType = {
  DataValidation: 'DataValidationError',
  TrainerOutput: 'TrainerOutputError',
  TrainerFailed: 'TrainerFailedError',
  /** The trainer refused its job (exit code 2: bad params or job file); retrying cannot help. */
  TrainerBadJob: 'TrainerBadJobError',
  /** This worker lacks a plugin the pipeline names; another worker may have it, so it is retried. */
  WorkerConfiguration: 'WorkerConfigurationError',
  GateFailed: 'GateFailedError',
  ApprovalRejected: 'ApprovalRejectedError',
  ApprovalExpired: 'ApprovalExpiredError',
  ArtifactIntegrity: 'ArtifactIntegrityError',
  InvalidName: 'InvalidNameError',
  /** A model with nothing in production: nothing to monitor or roll back to, and retrying will not change that. */
  NoProductionVersion: 'NoProductionVersionError',
  /** Pre-deployment validation refused the artifact (answers differ from evaluation, too slow, bad bytes). */
  DeploymentValidation: 'DeploymentValidationError',
  /** Another rollout owns the model's traffic split. */
  TrafficOwned: 'TrafficOwnedError',
  /** A rollout ended without promoting: rolled back on a breach, aborted, or not decided in time. */
  RolledBack: 'RolledBackError',
} as const;
export type ErrorType = (typeof ErrorType)[keyof typeof ErrorType];

/** Types that must never be retried by an activity retry policy. */
export const NON_RETRYABLE_ERROR_TYPES: readonly string[] = [
  ErrorType.DataValidation,
  ErrorType.TrainerOutput,
  ErrorType.TrainerBadJob,
  ErrorType.GateFailed,
  ErrorType.ArtifactIntegrity,
  ErrorType.InvalidName,
  ErrorType.NoProductionVersion,
  ErrorType.DeploymentValidation,
  ErrorType.TrafficOwned,
];

/** How a finished run is reported by the CLI; the exit code is stable for scripts. */
export const RunOutcome = {
  Deployed: 'deployed',
  DataInvalid: 'data_invalid',
  GateFailed: 'gate_failed',
  Rejected: 'rejected',
  Expired: 'expired',
  Failed: 'failed',
  Cancelled: 'cancelled',
  /** Deployment started but ended with production unchanged (validation refused, rollout rolled back or aborted). */
  RolledBack: 'rolled_back',
  Running: 'running',
} as const;
export type RunOutcome = (typeof RunOutcome)[keyof typeof RunOutcome];

export const EXIT_CODES: Record<RunOutcome, number> = {
  deployed: 0,
  running: 0,
  failed: 1,
  data_invalid: 2,
  gate_failed: 3,
  rejected: 4,
  expired: 5,
  cancelled: 6,
  rolled_back: 7,
};

/** The outcome a failure of each type means; any other failure is `failed`. */
export const OUTCOME_BY_ERROR_TYPE: Readonly<Record<string, RunOutcome>> = {
  [ErrorType.DataValidation]: RunOutcome.DataInvalid,
  [ErrorType.GateFailed]: RunOutcome.GateFailed,
  [ErrorType.ApprovalRejected]: RunOutcome.Rejected,
  [ErrorType.ApprovalExpired]: RunOutcome.Expired,
  [ErrorType.DeploymentValidation]: RunOutcome.RolledBack,
  [ErrorType.RolledBack]: RunOutcome.RolledBack,
};
