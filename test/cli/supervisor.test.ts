/**
 * Signals are heard however busy the run is: `lowrank` runs the command in a child process under
 * an idle supervisor, which ends a child stuck in one long wasm kernel and removes the half-written
 * output of a child that was killed outright.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { saveModel } from '../../src/model/io.js';
import { ROOT, tempDir } from '../helpers.js';

const folders: string[] = [];
before(async () => {
  await useBackend('wasm');
});
after(() => {
  for (const dir of folders) fs.rmSync(dir, { recursive: true, force: true });
});

function work(): string {
  const dir = tempDir();
  folders.push(dir);
  return dir;
}

/** Runs bin/lowrank.js; `env` adds to the environment (LOWRANK_SUPERVISED=1 runs the command without a supervisor). */
function start(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'lowrank.js'), ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', ...env } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.resume();
  const done = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return { child, done, stderr: () => stderr };
}

async function waitFor(condition: () => boolean, what: string, limitMs = 60_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves to the run's end, or to null if it is still running after `limitMs` (the run is then killed). */
async function endWithin(run: ReturnType<typeof start>, limitMs: number) {
  const timer = new Promise<null>((resolve) => setTimeout(() => resolve(null), limitMs));
  const ended = await Promise.race([run.done, timer]);
  if (ended === null) {
    spawnSync('pkill', ['-KILL', '-P', String(run.child.pid)]);
    run.child.kill('SIGKILL');
    await run.done;
  }
  return ended;
}

describe('the supervisor', () => {
  test('SIGTERM ends a run stuck inside one long wasm kernel, exit 143', async () => {
    // One 9×9 conv of 192 → 192 channels on 384×384: ~90 G multiply-adds, tens of seconds in a
    // single wasm call, during which the working process's own signal handler cannot run.
    const dir = path.join(work(), 'heavy');
    const model = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [384, 384, 192], filters: 192, kernelSize: 9, padding: 'same', kernelInitializer: 'zeros' })] });
    await saveModel(model, dir);
    model.dispose();
    const run = start(['--backend', 'wasm', '--threads', '1', 'bench', dir, dir, '--batch', '1']);
    await waitFor(() => /checking agreement/.test(run.stderr()), 'the first prediction');
    await new Promise((r) => setTimeout(r, 300));
    run.child.kill('SIGTERM');
    const ended = await endWithin(run, 15_000);
    assert.ok(ended, `still running 15 s after SIGTERM:\n${run.stderr()}`);
    assert.equal(ended.code, 143, run.stderr());
    assert.match(run.stderr(), /interrupted \(SIGTERM\)/);
  });

  test('a working process killed outright leaves no partial folder: the supervisor removes it', async () => {
    const parent = work();
    const input = path.join(parent, 'model');
    // ~40 MB of weights, so that saving takes long enough to be caught in the act.
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ name: 'conv1', inputShape: [8, 8, 2], filters: 4, kernelSize: 3, padding: 'same' }),
        tf.layers.conv2d({ name: 'conv2', filters: 6, kernelSize: 3, padding: 'same' }),
        tf.layers.flatten(),
        tf.layers.dense({ name: 'big', units: 25_000, kernelInitializer: 'zeros' }),
      ],
    });
    await saveModel(model, input);
    model.dispose();
    const out = path.join(parent, 'out');
    const run = start(['--backend', 'wasm', 'compress', input, '--layers', 'conv2', '--rank', '2', '--out', out]);
    const partials = () => fs.readdirSync(parent).filter((n) => n.startsWith('.out.partial-'));
    await waitFor(() => partials().length > 0 || run.child.exitCode !== null, 'the partial folder');
    assert.equal(run.child.exitCode, null, `the run ended before it could be killed:\n${run.stderr()}`);
    // The working process is the supervisor's only child: kill it as the out-of-memory killer would.
    const worker = spawnSync('pgrep', ['-P', String(run.child.pid)], { encoding: 'utf8' }).stdout.trim();
    assert.match(worker, /^\d+$/, 'one working process');
    process.kill(Number(worker), 'SIGKILL');
    const ended = await endWithin(run, 15_000);
    assert.ok(ended);
    assert.equal(ended.code, 137, run.stderr());
    assert.match(run.stderr(), /ended by SIGKILL/);
    assert.deepEqual(partials(), [], 'no partial folder left');
    assert.ok(!fs.existsSync(out));
  });
});
