import { describe, expect, it } from 'vitest';
import { createServingApp } from '../../src/serving/server.js';
import { ModelHost } from '../../src/serving/model-host.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';
import { Registry } from '../../src/registry/registry.js';
import { createLogger } from '../../src/logger.js';

const logger = createLogger({ level: 'silent', pretty: false });
const store = new MemoryArtifactStore();
const app = createServingApp({ host: new ModelHost(new Registry(store), store, logger), logger, tokens: ['a-long-enough-test-token-123'] });

describe('serving authentication', () => {
  it.each([
    ['GET', '/v1/models'],
    ['GET', '/%761/models'],
    ['GET', '/v%31/models'],
    ['POST', '/v1/models/credit-risk:predict'],
    ['POST', '/%761/models/credit-risk:predict'],
    ['POST', '/v1/models/credit-risk%3Apredict'],
  ])('%s %s without a token is refused', async (method, url) => {
    const res = await app.inject({ method: method as 'GET' | 'POST', url, payload: method === 'POST' ? { instance: { a: 1 } } : undefined });
    expect([401, 404]).toContain(res.statusCode);
    expect(res.statusCode).not.toBe(200);
  });

  it('an encoded path that routes to /v1/models needs the token too', async () => {
    const res = await app.inject({ method: 'GET', url: '/%761/models' });
    expect(res.statusCode).toBe(401);
    const ok = await app.inject({ method: 'GET', url: '/%761/models', headers: { authorization: 'Bearer a-long-enough-test-token-123' } });
    expect(ok.statusCode).toBe(200);
  });

  it('a wrong token is refused; health endpoints are open', async () => {
    expect((await app.inject({ method: 'GET', url: '/v1/models', headers: { authorization: 'Bearer wrong-token-of-some-length-000' } })).statusCode).toBe(401);
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
  });

  it('names the bad field in a malformed request', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/models/credit-risk:predict',
      headers: { authorization: 'Bearer a-long-enough-test-token-123' },
      payload: { instances: 'not-a-list' },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toContain('instances');
  });
});
