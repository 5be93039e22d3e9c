// What node:cluster runs in each HTTP worker (see ./primary.ts).
import { setFlagsFromString } from 'node:v8';
import { runWorker } from './worker.ts';

// As bin/watchtime does for the one-process server: a heap that grows by half, not fourfold, between collections.
setFlagsFromString('--heap-growing-percent=50');
await runWorker();
