// The short soak that CI runs; `npm run soak` runs the two-minute one.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const TSX = fileURLToPath(new URL('../node_modules/tsx/dist/cli.mjs', import.meta.url));
const SOAK = fileURLToPath(new URL('./load/soak.ts', import.meta.url));

test('a short soak: no difference, memory flat, WAL bounded', { timeout: 120_000 }, async () => {
  const child = spawn(process.execPath, [TSX, SOAK, '--duration', '10', '--rate', '2000']);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, out);
  assert.match(out, / 0 difference\(s\)/);
  assert.doesNotMatch(out, /FAIL/);
});
