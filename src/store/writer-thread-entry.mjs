// Entry of a store writer thread: registers tsx (as bin/conveyor.mjs does), then runs the TypeScript side.
import { register } from 'tsx/esm/api';

register();
await import('./writer-thread.ts');
