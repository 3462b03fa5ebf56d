/** --threads: the wasm backend's own threads start, change no result, and bad counts are refused. */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, cli, errorLine, folderSnapshot, runCli, tempDir } from '../helpers.js';

describe('--threads', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  /** 5 held-out images per class: 50. */
  const smallHeldOut = (): string => {
    const dir = tempDir();
    dirs.push(dir);
    for (const cls of fs.readdirSync(FASHION_TEST).sort()) {
      fs.mkdirSync(path.join(dir, cls));
      for (const f of fs.readdirSync(path.join(FASHION_TEST, cls)).sort().slice(0, 5)) {
        fs.copyFileSync(path.join(FASHION_TEST, cls, f), path.join(dir, cls, f));
      }
    }
    return dir;
  };

  test('compress --data: the same seed gives byte-identical weights with 1 and 2 threads', () => {
    const heldOut = smallHeldOut();
    const outDir = tempDir();
    dirs.push(outDir);
    const outputs = [1, 2].map((threads) => {
      const out = path.join(outDir, `out${threads}`);
      const run = runCli([
        '--backend', 'wasm', '--threads', String(threads), 'compress', CHARCNN, '--scheme', '2', '--rank', 'conv2=21,conv3=52',
        // Enough images for a minibatch of conv2 to make two shards (one per worker), and a few steps.
        '--data', FASHION_TRAIN, '--samples', '48', '--iterations', '8', '--eval-data', heldOut, '--seed', '5', '--out', out,
      ]);
      assert.equal(run.code, 0, run.stderr);
      // The backend really ran on that many threads.
      assert.match(run.stderr, new RegExp(`tfjs backend wasm, ${threads} threads?\\n`));
      return out;
    });
    // model.json and the weight file, byte for byte.
    assert.deepEqual(folderSnapshot(outputs[1]), folderSnapshot(outputs[0]));
  });

  for (const bad of ['0', '65', '1.5', 'two']) {
    test(`--threads ${bad}: one-line error, nothing written`, async () => {
      const out = path.join(tempDir(), 'out');
      dirs.push(path.dirname(out));
      const run = await cli(['--threads', bad, 'compress', CHARCNN, '--layers', 'conv3', '--rank', '8', '--out', out]);
      assert.equal(run.code, 1);
      assert.match(errorLine(run), new RegExp(`^lowrank: --threads ${bad.replace('.', '\\.')}: (give a whole number ≥ 1|at most 64 \\()`));
      assert.equal(run.stderr.trim().split('\n').length, 1);
      assert.ok(!fs.existsSync(out));
    });
  }
});
