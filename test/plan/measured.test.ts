import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { useBackend } from '../../src/runtime/backend.js';
import { measuredShortfall } from '../../src/cli/compress.js';
import { loadModel } from '../../src/model/io.js';
import { allocateTime, type TimeOption } from '../../src/plan/measured.js';
import { mulberry32 } from '../../src/runtime/random.js';
import { CHARCNN, cli, errorLine, tempDir } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

describe('allocation of ranks to a time budget', () => {
  /** Every combination of one option per layer, by brute force. */
  const combinations = (options: TimeOption[][]): TimeOption[][] =>
    options.reduce<TimeOption[][]>((acc, layer) => acc.flatMap((c) => layer.map((o) => [...c, o])), [[]]);
  const total = (c: TimeOption[], key: 'ms' | 'error') => c.reduce((s, o) => s + o[key], 0);

  test('never exceeds the budget, and no combination within it (less the rounding of one step per layer) has less error', () => {
    const random = mulberry32(5).uniform;
    for (let trial = 0; trial < 20; trial++) {
      // Three layers: the original (no error) and five ranks, time rising and error falling with the rank.
      const options = [0, 1, 2].map(() => {
        const ranks = Array.from({ length: 5 }, (_, k) => ({ rank: k + 1, ms: 0.2 + k * random() * 2, error: (5 - k) * random() }));
        for (let k = 1; k < ranks.length; k++) ranks[k].ms = Math.max(ranks[k].ms, ranks[k - 1].ms);
        return [{ rank: 0, ms: 10 * random() + 2, error: 0 }, ...ranks];
      });
      const all = combinations(options);
      const fastest = Math.min(...all.map((c) => total(c, 'ms')));
      // Budgets just below the time of the best combination within a looser budget: the allocation must not round its way into it.
      const justShort = [1.2, 2, 4].map((f) => {
        const within = all.filter((c) => total(c, 'ms') <= fastest * f);
        const best = within.reduce((a, c) => (total(c, 'error') < total(a, 'error') ? c : a));
        return total(best, 'ms') * (1 - 1e-9);
      });
      for (const budget of [fastest * 0.99, fastest * 1.01, fastest * 1.5, fastest * 3, ...justShort]) {
        const got = allocateTime(options, budget);
        if (budget < fastest) {
          assert.equal(got, null, `trial ${trial}: budget ${budget} below the fastest ${fastest}`);
          continue;
        }
        if (!got) {
          // Only the rounding up of each option's time to whole budget steps can miss a budget this close.
          assert.ok(fastest > budget * (1 - 3 / 4000), `trial ${trial}: nothing found within ${budget} (fastest ${fastest})`);
          continue;
        }
        assert.equal(got.choice.length, 3);
        got.choice.forEach((o, l) => assert.ok(options[l].includes(o)));
        assert.ok(total(got.choice, 'ms') <= budget, `trial ${trial}: ${total(got.choice, 'ms')} ms over ${budget}`);
        assert.ok(Math.abs(got.ms - total(got.choice, 'ms')) < 1e-12 && Math.abs(got.error - total(got.choice, 'error')) < 1e-12);
        const surely = all.filter((c) => total(c, 'ms') <= budget * (1 - 3 / 4000));
        const best = Math.min(...surely.map((c) => total(c, 'error')));
        assert.ok(got.error <= best + 1e-12, `trial ${trial}, budget ${budget}: error ${got.error}, a combination within the budget has ${best}`);
      }
    }
  });
});

/** Linear between the timed ranks, flat beyond them: how the table gives a rank's time. */
function timeAt(points: { rank: number; ms: number }[], rank: number): number {
  const hi = points.findIndex((p) => p.rank >= rank);
  if (hi === 0) return points[0].ms;
  if (hi < 0) return points[points.length - 1].ms;
  const [a, b] = [points[hi - 1], points[hi]];
  return a.ms + ((b.ms - a.ms) * (rank - a.rank)) / (b.rank - a.rank);
}

describe('compress --speedup --measured', () => {
  test('the time table, the ranks it chose and the prediction agree, and a real bench checks the result', async () => {
    const out = path.join(tempDir(), 'out');
    const target = 3;
    const run = await cli(['compress', CHARCNN, '--layers', 'conv2,conv3', '--speedup', String(target), '--measured', '--out', out, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    const m = report.measured;
    assert.equal(m.target, target);
    assert.equal(m.batch, 32, 'bench\'s largest default batch');
    assert.equal(m.backend, 'wasm');
    assert.deepEqual(m.layers.map((l: { name: string }) => l.name), ['conv2', 'conv3']);
    let predicted = m.restMs;
    for (const l of m.layers) {
      const ranks = l.points.map((p: { rank: number }) => p.rank);
      assert.equal(ranks[0], 1);
      assert.ok(ranks.every((r: number, k: number) => k === 0 || r > ranks[k - 1]), `${l.name}: ranks ascending`);
      assert.ok(l.points.every((p: { ms: number }, k: number) => p.ms > 0 && (k === 0 || p.ms >= l.points[k - 1].ms)), `${l.name}: a higher rank never faster`);
      predicted += l.rank === null ? l.originalMs : timeAt(l.points, l.rank);
    }
    assert.ok(Math.abs(m.predicted.afterMs - predicted) < 1e-9 * predicted, `predicted ${m.predicted.afterMs} ms; from the table ${predicted} ms`);
    assert.ok(Math.abs(m.predicted.speedup - m.beforeMs / m.predicted.afterMs) < 1e-9);
    assert.ok(m.predicted.speedup >= target, `predicted ${m.predicted.speedup}×`);
    assert.ok(m.maximum >= m.predicted.speedup);
    assert.ok(m.restMs > 0 && m.restMs < m.beforeMs);

    // The written model replaces exactly the layers the table gave a rank, at that rank.
    const replaced = m.layers.filter((l: { rank: number | null }) => l.rank !== null);
    assert.ok(replaced.length >= 1);
    assert.deepEqual(report.layers.map((l: { name: string; rank: number }) => [l.name, l.rank]), replaced.map((l: { name: string; rank: number }) => [l.name, l.rank]));
    for (const l of m.layers.filter((l: { rank: number | null }) => l.rank === null)) assert.ok(report.skipped.some((s: { name: string }) => s.name === l.name));
    const { model } = await loadModel(out);
    const names = model.layers.map((l) => l.name);
    for (const l of m.layers) assert.equal(names.includes(`${l.name}_v`), l.rank !== null, l.name);
    model.dispose();

    assert.equal(m.bench.batch, 32);
    assert.ok(m.bench.speedup > 1 && m.bench.speedupLow <= m.bench.speedup && m.bench.speedup <= m.bench.speedupHigh, JSON.stringify(m.bench));

    // The closing bench is the check of the promise: short of the target, a warning says by how much.
    const warning = /warning: the closing bench at batch 32 measured ([\d.]+)× \[[\d.]+–[\d.]+×\]: ([\d.]+)× \([\d.]+ ?%\) short of the 3× target at the median, (and ([\d.]+)× short even at the top of its 95% interval|though its 95% interval reaches the target)/;
    const said = warning.exec(run.stderr);
    assert.equal(said !== null, m.bench.speedup < target, `bench ${JSON.stringify(m.bench)}; stderr ${run.stderr}`);
    if (said) {
      assert.equal(Number(said[2]), Number((target - m.bench.speedup).toFixed(2)));
      assert.equal(said[4] !== undefined, m.bench.speedupHigh < target);
    }
    // The same bench against a target above the top of its interval, as the CLI words it.
    const above = Math.ceil(m.bench.speedupHigh * 10 + 1) / 10;
    const line = measuredShortfall({ target: above, bench: m.bench });
    assert.match(line ?? '', new RegExp(`short of the ${above}× target at the median, and ${(above - m.bench.speedupHigh).toFixed(2)}× short even at the top of its 95% interval`));
    assert.equal(measuredShortfall({ target: m.bench.speedup, bench: m.bench }), null);
  });

  test('a target the measured times cannot reach: one line with the maximum and what holds it back, nothing written', async () => {
    const parent = tempDir();
    const run = await cli(['compress', CHARCNN, '--speedup', '25', '--measured', '--timing-batch', '8', '--out', path.join(parent, 'out')]);
    assert.equal(run.code, 1);
    const line = errorLine(run);
    const m = /^lowrank: --speedup 25 --measured: in measured time at batch 8 on wasm, these layers can make the model at most (\d+\.\d\d)× faster \(the rest of the model takes [\d.]+ % of the original's [\d.]+ ms \(conv1 [\d.]+ %, conv4 [\d.]+ %, outside the layers [\d.]+ %\), and the replaced layers at their fastest timed ranks still [\d.]+ %\); ask for less, or select more layers with --layers$/.exec(line);
    assert.ok(m, line);
    assert.ok(Number(m[1]) > 1 && Number(m[1]) < 25);
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    assert.deepEqual(fs.readdirSync(parent), []);
  });
});
