import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/eval/onnx-model.js';
import type { Logger } from '../../src/logger.js';
import { Registry } from '../../src/registry/registry.js';
import { ModelHost, type ServedModel } from '../../src/serving/model-host.js';
import type { ModelVersionRecord } from '../../src/shared/registry-types.js';
import { keys } from '../../src/store/keys.js';
import { fixtureVersionDraft } from '../helpers/fixture-model.js';
import { MemoryArtifactStore } from '../../src/store/memory-store.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/models/${name}`, import.meta.url));
const MODEL_BYTES = readFileSync(fixture('credit-sklearn.onnx'));
const METADATA_BYTES = readFileSync(fixture('credit-sklearn.metadata.json'));
const MODEL_SHA = sha256Hex(MODEL_BYTES);
const MODEL = 'credit-risk';

// Rows from examples/credit-risk/data/credit-risk.csv
const ROWS = [
  { age: 78, income: 45729.94, loan_amount: 5152.29, loan_term_months: 12, credit_score: 768, employment_years: 8.7, num_open_accounts: 4, debt_to_income: 0.247, home_ownership: 'OWN', purpose: 'credit_card', region: 'east' },
  { age: 26, income: 42580.78, loan_amount: 20459.04, loan_term_months: 48, credit_score: 611, employment_years: 5.8, num_open_accounts: 1, debt_to_income: 0.37, home_ownership: 'RENT', purpose: 'debt_consolidation', region: 'north' },
];

interface LogLine {
  level: number;
  msg: string;
  model?: string;
  version?: number;
  err?: string;
}

let store: MemoryArtifactStore;
let registry: Registry;
let logs: LogLine[];
let logger: Logger;
let host: ModelHost;

beforeEach(() => {
  store = new MemoryArtifactStore();
  registry = new Registry(store);
  logs = [];
  logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  host = new ModelHost(registry, store, logger);
});

afterEach(async () => {
  await host.close();
});

/** Stores a blob + metadata and registers a version claiming `claimedSha` for them. */
async function registerModel(run: string, blob: Buffer, claimedSha: string, blobKey = keys.modelBlob(sha256Hex(blob))): Promise<ModelVersionRecord> {
  // Metadata is content-addressed by its own bytes, not the model's.
  const metadataKey = keys.modelMetadata(sha256Hex(METADATA_BYTES));
  await store.put(blobKey, blob);
  await store.put(metadataKey, METADATA_BYTES);
  return registry.registerVersion(fixtureVersionDraft({ model: MODEL, artifact: { sha256: claimedSha, key: blobKey, size: blob.length, metadataKey }, run }));
}

async function promote(version: number, expectedVersion: number | null): Promise<void> {
  await registry.moveAlias({ model: MODEL, alias: 'production', version, expectedVersion, run: { workflowId: `wf-p${version}`, runId: `run-p${version}` } });
}

async function predictLabels(): Promise<{ version: number; labels: unknown[] } | undefined> {
  return host.use(MODEL, async (served) => {
    const p = await served.loaded.predict(ROWS);
    if (p.task !== 'classification') throw new Error('expected classification');
    expect(p.probabilities).toHaveLength(ROWS.length * 2);
    for (let i = 0; i < ROWS.length; i++) expect(p.probabilities[i * 2]! + p.probabilities[i * 2 + 1]!).toBeCloseTo(1, 5);
    return { version: served.version, labels: p.labels };
  });
}

/** Polls until the session is released (bounded by attempts, not by a time budget). */
async function waitReleased(served: ServedModel): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const err = await served.loaded.predict(ROWS).then(
      () => null,
      (e: unknown) => e as Error,
    );
    if (err) {
      expect(err.message).toBe('model has been released');
      return;
    }
    await sleep(10);
  }
  throw new Error('old session was never released');
}

describe('ModelHost', () => {
  it('serves nothing before an alias exists, then loads the production version', async () => {
    await registerModel('1', MODEL_BYTES, MODEL_SHA);
    await host.refresh();
    expect(host.ready).toBe(true);
    expect(host.get(MODEL)).toBeUndefined();
    expect(await host.use(MODEL, async () => 'unreachable')).toBeUndefined();

    await promote(1, null);
    await host.refresh();
    expect(host.get(MODEL)).toMatchObject({ model: MODEL, version: 1, sha256: MODEL_SHA, inFlight: 0 });
    expect(host.list()).toEqual([{ model: MODEL, version: 1, sha256: MODEL_SHA, loadedAt: expect.any(String), traffic: null }]);
    const result = await predictLabels();
    expect(result?.version).toBe(1);
    expect(result?.labels).toHaveLength(2);
    for (const l of result!.labels) expect([0, 1]).toContain(l);
  });

  it('refuses a version whose bytes do not match the registry hash, keeps serving, then switches to a valid one', async () => {
    await registerModel('1', MODEL_BYTES, MODEL_SHA);
    await promote(1, null);
    await host.refresh();
    const v1 = host.get(MODEL)!;
    const before = await predictLabels();

    // Version 2: the registry recorded the genuine model's hash, but the stored bytes were altered.
    const tampered = Buffer.from(MODEL_BYTES);
    tampered[tampered.length - 10] = tampered[tampered.length - 10]! ^ 0xff;
    expect(sha256Hex(tampered)).not.toBe(MODEL_SHA);
    const claimed = sha256Hex(Buffer.from('hash the registry recorded for version 2'));
    const v2 = await registerModel('2', tampered, claimed, keys.modelBlob(claimed));
    expect(v2.version).toBe(2);
    await promote(2, 1);

    await host.refresh();
    expect(host.get(MODEL)?.version).toBe(1);
    expect(host.get(MODEL)).toBe(v1);
    const errors = logs.filter((l) => l.level === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ model: MODEL, version: 2, msg: 'refusing to serve this version; routes keep their current sessions' });
    expect(errors[0]!.err).toContain('SHA-256 mismatch');
    expect(await predictLabels()).toEqual(before);

    // A refused version is not retried (and re-logged) on every refresh.
    await host.refresh();
    expect(logs.filter((l) => l.level === 50)).toHaveLength(1);
    expect(host.get(MODEL)?.version).toBe(1);

    const v3 = await registerModel('3', MODEL_BYTES, MODEL_SHA);
    expect(v3.version).toBe(3);
    await promote(3, 2);
    await host.refresh();
    expect(host.get(MODEL)).toMatchObject({ version: 3, sha256: MODEL_SHA });
    expect(await predictLabels()).toEqual({ version: 3, labels: before!.labels });
    // the replaced session is released once nothing uses it
    await waitReleased(v1);
  });

  it('finishes a request in flight during a swap on the old session, then releases it', async () => {
    await registerModel('1', MODEL_BYTES, MODEL_SHA);
    await promote(1, null);
    await host.refresh();
    const old = host.get(MODEL)!;

    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let started!: () => void;
    const inside = new Promise<void>((r) => (started = r));
    const request = host.use(MODEL, async (served) => {
      started();
      await gate;
      const p = await served.loaded.predict(ROWS);
      return { version: served.version, task: p.task };
    });
    await inside;
    expect(old.inFlight).toBe(1);

    await registerModel('2', MODEL_BYTES, MODEL_SHA);
    await promote(2, 1);
    await host.refresh();
    expect(host.get(MODEL)?.version).toBe(2);
    expect(host.get(MODEL)).not.toBe(old);

    // The old session stays usable while the request is in flight.
    await sleep(50);
    expect((await old.loaded.predict(ROWS)).task).toBe('classification');

    // A hold (as a shadow copy takes one) keeps it too; releasing it twice counts once.
    const release = host.hold(old);
    expect(old.inFlight).toBe(2);
    open();
    expect(await request).toEqual({ version: 1, task: 'classification' });
    expect(old.inFlight).toBe(1);
    release();
    release();
    expect(old.inFlight).toBe(0);
    await waitReleased(old);
    expect((await predictLabels())?.version).toBe(2);
  });

  it('refresh calls made during a refresh share one refresh that runs after it', async () => {
    await registerModel('1', MODEL_BYTES, MODEL_SHA);
    await promote(1, null);
    const a = host.refresh();
    const b = host.refresh();
    const c = host.refresh();
    expect(b).not.toBe(a);
    expect(c).toBe(b);
    await Promise.all([a, b, c]);
    expect(logs.filter((l) => l.msg === 'serving new version')).toHaveLength(1);
  });

  it('a poll joins the refresh already running (or queued) instead of queueing another', async () => {
    await registerModel('1', MODEL_BYTES, MODEL_SHA);
    await promote(1, null);
    const listModels = registry.listModels.bind(registry);
    let started = 0;
    registry.listModels = async () => {
      started++;
      return listModels();
    };
    const a = host.refresh();
    expect(host.poll()).toBe(a);
    await a;
    const b = host.refresh();
    const queued = host.refresh();
    expect(host.poll()).toBe(queued);
    await Promise.all([b, queued]);
    expect(started).toBe(3);
    await host.poll();
    expect(started).toBe(4);
  });

  it('a refresh asked for just as the running one ends joins the queued one: never two at once', async () => {
    await registerModel('1', MODEL_BYTES, MODEL_SHA);
    await promote(1, null);
    const listModels = registry.listModels.bind(registry);
    let running = 0;
    let most = 0;
    let started = 0;
    registry.listModels = async () => {
      started++;
      most = Math.max(most, ++running);
      try {
        return await listModels();
      } finally {
        running--;
      }
    };
    const a = host.refresh();
    const queued = host.refresh();
    await a;
    // The running refresh has ended; the queued one has not started yet.
    const late = host.refresh();
    expect(late).toBe(queued);
    await Promise.all([queued, late]);
    expect(started).toBe(2);
    expect(most).toBe(1);
  });

  it('a refresh asked for while one is running sees changes made after the running one read the registry', async () => {
    await registerModel('1', MODEL_BYTES, MODEL_SHA);
    await registerModel('2', MODEL_BYTES, MODEL_SHA);
    await promote(1, null);
    await host.refresh();
    // The next refresh (a poll) reads the alias, then waits before acting on it.
    const getAlias = registry.getAlias.bind(registry);
    let aliasRead!: () => void;
    const read = new Promise<void>((resolve) => (aliasRead = resolve));
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    registry.getAlias = async (...args: Parameters<Registry['getAlias']>) => {
      const alias = await getAlias(...args);
      aliasRead();
      await gate;
      return alias;
    };
    const poll = host.refresh();
    await read;
    await promote(2, 1);
    const asked = host.refresh();
    openGate();
    await poll;
    await asked;
    expect(host.get(MODEL)?.version).toBe(2);
  });
});
