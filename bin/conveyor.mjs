#!/usr/bin/env node
// Runs the TypeScript CLI through tsx, so pipeline files and the CLI need no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
