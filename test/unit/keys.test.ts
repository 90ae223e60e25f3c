import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NAME_PATTERN, isValidName } from '../../src/shared/names.js';
import { InvalidNameError, checkName, checkSha256, checkWorkflowId, keys, versionSegment } from '../../src/store/keys.js';

const SHA = createHash('sha256').update('model bytes').digest('hex');
const SCHEMA = createHash('sha256').update('declared schema').digest('hex');

/** Hostile values refused everywhere a name or id reaches a key. */
const HOSTILE: Array<[string, string]> = [
  ['dot-dot', '..'],
  ['single dot', '.'],
  ['parent path', '../x'],
  ['nested parent path', 'a/../../b'],
  ['url-encoded dot-dot', '%2e%2e'],
  ['url-encoded slash', 'a%2fb'],
  ['slash', 'a/b'],
  ['backslash', 'a\\b'],
  ['backslash parent', '..\\x'],
  ['absolute path', '/abs'],
  ['empty', ''],
  ['NUL byte', 'model\u0000'],
  ['NUL byte inside', 'a\u0000/../b'],
  ['trailing newline', 'model\n'],
  ['space', 'my model'],
  ['cyrillic o lookalike', 'm\u043edel'],
  ['fullwidth letters', '\uff4d\uff4f\uff44\uff45\uff4c'],
  ['fullwidth solidus', 'a\uff0fb'],
  ['one dot leader (U+2024) pair', '\u2024\u2024'],
  ['division slash lookalike', 'a\u2215b'],
  ['combining accent', 'mode\u0301l'],
  ['zero-width space', 'model\u200b'],
];

function refused(fn: () => unknown, what: string): void {
  expect(fn).toThrow(InvalidNameError);
  expect(fn).toThrow(new RegExp(`^invalid ${what} "`));
}

describe('model names and aliases (NAME_PATTERN)', () => {
  it.each(HOSTILE)('refuses %s', (_label, value) => {
    expect(isValidName(value)).toBe(false);
    refused(() => checkName('model', value), 'model');
    refused(() => keys.version(value, 1), 'model');
    refused(() => keys.versionsPrefix(value), 'model');
    refused(() => keys.runIndex(value, 'wf-1'), 'model');
    refused(() => keys.runClaim(value, 'wf-1'), 'model');
    refused(() => keys.decision(value, 1), 'model');
    refused(() => keys.aliasesPrefix(value), 'model');
    refused(() => keys.aliasPrefix(value, 'production'), 'model');
    refused(() => keys.aliasEntry(value, 'production', 1), 'model');
    refused(() => keys.aliasPrefix('credit-risk', value), 'alias');
    refused(() => keys.aliasEntry('credit-risk', value, 1), 'alias');
    refused(() => keys.runReport(value, 'wf-1', 'run-1', 'evaluation'), 'model');
    refused(() => keys.runReport('credit-risk', 'wf-1', 'run-1', value), 'report');
  });

  it.each([
    ['uppercase', 'Credit-Risk'],
    ['leading dash', '-model'],
    ['leading underscore', '_model'],
    ['dot', 'model.v2'],
    ['64 characters', 'a'.repeat(64)],
    ['colon', 'a:b'],
    ['percent', 'a%b'],
  ])('refuses %s', (_label, value) => {
    expect(isValidName(value)).toBe(false);
    refused(() => checkName('model', value), 'model');
    refused(() => keys.aliasPrefix('credit-risk', value), 'alias');
    refused(() => keys.aliasEntry('credit-risk', value, 1), 'alias');
    refused(() => keys.aliasEntry(value, 'production', 1), 'model');
    refused(() => keys.runClaim(value, 'wf-1'), 'model');
    refused(() => keys.runReport('credit-risk', 'wf-1', 'run-1', value), 'report');
  });

  it.each(['a', '0', 'credit-risk', 'credit_risk_2', 'a'.repeat(63), '9lives'])('accepts %s', (value) => {
    expect(NAME_PATTERN.test(value)).toBe(true);
    expect(checkName('model', value)).toBe(value);
  });
});

describe('workflow ids', () => {
  it.each(HOSTILE)('refuses %s', (_label, value) => {
    refused(() => checkWorkflowId(value), 'workflow id');
    refused(() => keys.runIndex('credit-risk', value), 'workflow id');
    refused(() => keys.runClaim('credit-risk', value), 'workflow id');
    refused(() => keys.runReport('credit-risk', value, 'run-1', 'validation'), 'workflow id');
    // run ids are Temporal ids too, and a path segment of the report key
    refused(() => keys.runReport('credit-risk', 'wf-1', value, 'validation'), 'workflow id');
  });

  it.each([
    ['dot-dot inside', 'pipeline..x'],
    ['dot-dot at the end', 'pipeline-..'],
    ['leading dot', '.hidden'],
    ['201 characters', 'a'.repeat(201)],
  ])('refuses %s', (_label, value) => {
    refused(() => checkWorkflowId(value), 'workflow id');
    refused(() => keys.runIndex('credit-risk', value), 'workflow id');
    refused(() => keys.runClaim('credit-risk', value), 'workflow id');
    refused(() => keys.runReport('credit-risk', value, 'run-1', 'evaluation'), 'workflow id');
    refused(() => keys.runReport('credit-risk', 'wf-1', value, 'evaluation'), 'workflow id');
  });

  it('accepts Temporal-style ids, including uppercase, dots and colons, up to 200 characters', () => {
    for (const id of ['pipeline-credit-risk-20240101T120000Z', 'Pipeline.Credit:risk_1', 'a'.repeat(200)]) {
      expect(checkWorkflowId(id)).toBe(id);
    }
  });
});

describe('sha256', () => {
  it.each([
    ...HOSTILE,
    ['uppercase hex', SHA.toUpperCase()],
    ['63 characters', SHA.slice(1)],
    ['65 characters', `${SHA}0`],
    ['non-hex', `${SHA.slice(1)}g`],
    ['prefixed', `sha256:${SHA}`],
    ['parent path of 64 chars', `../${SHA.slice(3)}`],
  ])('refuses %s', (_label, value) => {
    refused(() => checkSha256(value), 'sha256');
    refused(() => keys.modelBlob(value), 'sha256');
    refused(() => keys.modelMetadata(value), 'sha256');
    refused(() => keys.dataset(value), 'sha256');
    refused(() => keys.datasetInfo(value), 'sha256');
    refused(() => keys.profile(value, SCHEMA), 'sha256');
    refused(() => keys.profile(SHA, value), 'sha256');
    refused(() => keys.split(value, 1, 0.2, 'abc', 'train'), 'sha256');
  });
});

describe('version segments', () => {
  it('zero-pads to six digits so keys sort in version order', () => {
    expect(versionSegment(1)).toBe('000001');
    expect(versionSegment(42)).toBe('000042');
    expect(versionSegment(999_999)).toBe('999999');
    const versions = [10, 2, 100, 1, 9];
    const sortedKeys = versions.map((v) => keys.version('m', v)).sort();
    expect(sortedKeys).toEqual([1, 2, 9, 10, 100].map((v) => keys.version('m', v)));
  });

  it.each([
    ['zero', 0],
    ['negative', -1],
    ['non-integer', 1.5],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['unsafe integer', 2 ** 53],
  ])('refuses %s', (_label, value) => {
    refused(() => versionSegment(value), 'version');
    refused(() => keys.version('credit-risk', value), 'version');
    refused(() => keys.decision('credit-risk', value), 'version');
    // an alias log's sequence number is a version segment too
    refused(() => keys.aliasEntry('credit-risk', 'production', value), 'version');
  });

  it('sorts alias log entries in sequence order, under their own alias only', () => {
    const seqs = [10, 2, 100, 1, 9];
    const sortedKeys = seqs.map((n) => keys.aliasEntry('m', 'production', n)).sort();
    expect(sortedKeys).toEqual([1, 2, 9, 10, 100].map((n) => keys.aliasEntry('m', 'production', n)));
    for (const key of sortedKeys) {
      expect(key.startsWith(keys.aliasPrefix('m', 'production'))).toBe(true);
      expect(key.startsWith(keys.aliasesPrefix('m'))).toBe(true);
      // the trailing slash keeps one alias's log from listing another's
      expect(key.startsWith(keys.aliasPrefix('m', 'prod'))).toBe(false);
      expect(key.startsWith(keys.versionsPrefix('m'))).toBe(false);
    }
  });
});

describe('keys for valid names', () => {
  it('builds the expected keys', () => {
    expect(keys.dataset(SHA)).toBe(`datasets/sha256/${SHA}`);
    expect(keys.datasetInfo(SHA)).toBe(`datasets/sha256/${SHA}.json`);
    expect(keys.profile(SHA, SCHEMA)).toBe(`profiles/${SHA}/${SCHEMA}.json`);
    expect(keys.modelBlob(SHA)).toBe(`models/sha256/${SHA}.onnx`);
    expect(keys.modelMetadata(SHA)).toBe(`models/metadata/sha256/${SHA}.json`);
    expect(keys.runReport('credit-risk', 'pipeline-credit-risk-1', 'run-1', 'evaluation')).toBe(
      'runs/credit-risk/pipeline-credit-risk-1/run-1/evaluation.json',
    );
    expect(keys.runReport('credit-risk', 'pipeline-credit-risk-1', 'run.2:a', 'evaluation-1')).toBe(
      'runs/credit-risk/pipeline-credit-risk-1/run.2:a/evaluation-1.json',
    );
    expect(keys.versionsPrefix('credit-risk')).toBe('registry/credit-risk/versions/');
    expect(keys.version('credit-risk', 7)).toBe('registry/credit-risk/versions/000007.json');
    expect(keys.runIndex('credit-risk', 'wf.1')).toBe('registry/credit-risk/runs/wf.1.json');
    expect(keys.runClaim('credit-risk', 'wf.1')).toBe('registry/credit-risk/claims/wf.1.json');
    expect(keys.aliasesPrefix('credit-risk')).toBe('registry/credit-risk/aliases/');
    expect(keys.aliasPrefix('credit-risk', 'production')).toBe('registry/credit-risk/aliases/production/');
    expect(keys.aliasEntry('credit-risk', 'production', 12)).toBe('registry/credit-risk/aliases/production/000012.json');
    expect(keys.decision('credit-risk', 3)).toBe('registry/credit-risk/decisions/000003.json');
    expect(keys.modelsPrefix()).toBe('registry/');
  });

  it('builds split keys with a sanitised layout, a truncated seed and a fixed-precision fraction', () => {
    expect(keys.split(SHA, 7, 0.25, 'deadbeef', 'train')).toBe(`splits/${SHA}/deadbeef-seed-7-holdout-0.2500/train.csv`);
    expect(keys.split(SHA, 7.9, 0.2, 'abc', 'holdout')).toBe(`splits/${SHA}/abc-seed-7-holdout-0.2000/holdout.csv`);
    // a hostile layout cannot add path segments
    const hostile = keys.split(SHA, 1, 0.2, '../../etc/passwd%2f..\\x', 'train');
    expect(hostile).toBe(`splits/${SHA}/ecad2f-seed-1-holdout-0.2000/train.csv`);
    expect(hostile.split('/')).toHaveLength(4);
  });
});

describe('claims and run indexes never collide', () => {
  it('a workflow id ending in ".claim" does not share a key with another run\'s claim', () => {
    expect(keys.runClaim('m', 'x')).not.toBe(keys.runIndex('m', 'x.claim'));
  });
});
