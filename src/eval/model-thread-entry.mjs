// Entry of an inference worker thread: registers tsx (as bin/conveyor.mjs does), then runs the TypeScript side.
import { register } from 'tsx/esm/api';

register();
await import('./model-thread.ts');
