import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startDevStack, type DevStack } from '../src/dev/servers.js';

export interface StackInfo {
  temporalAddress: string;
  s3Endpoint: string;
  accessKey: string;
  secretKey: string;
  dir: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    stack: StackInfo;
  }
}

let stack: DevStack | undefined;
let dir: string | undefined;

/** One real Temporal dev server and one real MinIO for the whole test run. */
export async function setup(project: TestProject): Promise<void> {
  dir = mkdtempSync(join(tmpdir(), 'conveyor-test-'));
  stack = await startDevStack({ dir, accessKey: 'conveyor-test', secretKey: 'conveyor-test-secret' });
  project.provide('stack', {
    temporalAddress: stack.temporalAddress,
    s3Endpoint: stack.s3Endpoint,
    accessKey: stack.accessKey,
    secretKey: stack.secretKey,
    dir,
  });
}

export async function teardown(): Promise<void> {
  await stack?.stop();
  if (dir && !process.env.CONVEYOR_KEEP_TEST_DIR) rmSync(dir, { recursive: true, force: true });
}
