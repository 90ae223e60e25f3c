/** The governance API: `createApiApp` for tests and embedding, `startApi` for `conveyor api`. */
export { API_BODY_LIMIT_BYTES, API_ROUTES, apiOpenApiDocument, createApiApp } from './app.js';
export type { ApiDeps } from './deps.js';
export { ADMIN_GROUP, ApiPolicyError, Authorizer, apiPolicySchema, loadApiPolicy, parseApiPolicy, type ApiPolicy, type ModelAction, type ModelRights, type ProductionRule } from './policy.js';
export {
  API_HOST_ENV,
  API_POLICY_ENV,
  API_PORT_ENV,
  API_TOKENS_FILE_ENV,
  DEFAULT_API_HOST,
  DEFAULT_API_PORT,
  startApi,
  type RunningApi,
  type StartApiOptions,
} from './service.js';
