import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { useBackend } from '../../src/runtime/backend.js';
import { heldOutLoss } from '../../src/plan/maxloss.js';
import type { DataReport } from '../../src/reconstruct/report.js';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, cli, errorLine, imageSubset, tempDir, type CliRun } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** Four held-out images per class, labelled (class folders). */
const LABELLED = imageSubset(FASHION_TEST, 4);
/** The same images without labels: all at the folder's top level. */
const UNLABELLED = (() => {
  const dir = tempDir('lowrank-unlabelled-');
  for (const cls of fs.readdirSync(LABELLED)) {
    for (const f of fs.readdirSync(path.join(LABELLED, cls))) fs.copyFileSync(path.join(LABELLED, cls, f), path.join(dir, `${cls}-${f}`));
  }
  return dir;
})();

/**
 * Few fitting images and the exact solve only: the search's logic, not its figures. The output
 * keeps float32 weights, so the written model is exactly the one the search scored.
 */
const maxLoss = (out: string, limit: string, probes: string, evalData: string, samples = '24'): Promise<CliRun> =>
  cli(['compress', CHARCNN, '--max-loss', limit, '--probes', probes, '--data', FASHION_TRAIN, '--samples', samples, '--iterations', '0',
    '--eval-data', evalData, '--quantize', 'none', '--out', out, '--json']);

interface Probe { target: number; ranks: Record<string, number>; theoreticalSpeedup: number; loss: number; meets: boolean }

/** What every search must satisfy: a bisection whose chosen probe is the fastest within the limit. */
function checkSearch(report: any, limit: number, probes: number): Probe {
  const m = report.maxLoss;
  assert.equal(m.limit, limit);
  assert.ok(m.probes.length >= 1 && m.probes.length <= probes, `${m.probes.length} probes`);
  m.probes.forEach((p: Probe, i: number) => {
    assert.equal(p.meets, p.loss <= limit, `probe ${i + 1}`);
    assert.ok(p.target > 1 && p.target <= m.maximum, `probe ${i + 1} at ${p.target}× within (1, ${m.maximum}]`);
    assert.ok(p.theoreticalSpeedup >= p.target, `probe ${i + 1} reaches its target by MACs`);
    // Bisection: each probe lies above every earlier probe within the limit and below every one beyond it.
    for (const q of m.probes.slice(0, i) as Probe[]) assert.ok(q.meets ? p.target > q.target : p.target < q.target, `probe ${i + 1} at ${p.target}× against ${q.target}×`);
  });
  const within = (m.probes as Probe[]).filter((p) => p.meets);
  const fastest = within.reduce((a, p) => (p.theoreticalSpeedup > a.theoreticalSpeedup ? p : a));
  assert.deepEqual(m.chosen, fastest);
  assert.ok(m.chosen.loss <= limit);
  // The written model is the chosen probe's.
  assert.deepEqual(Object.fromEntries(report.layers.map((l: { name: string; rank: number }) => [l.name, l.rank])), m.chosen.ranks);
  assert.equal(report.theoreticalSpeedup, m.chosen.theoreticalSpeedup);
  return m.chosen;
}

describe('held-out loss in points', () => {
  const report = (accuracy: DataReport['accuracy'], agreement: number) => ({ accuracy, agreement: { filter: 0, data: agreement } }) as DataReport;

  test('is counted in images, so a loss of 5 in 1000 meets a limit of 0.5 exactly', () => {
    const labelled = heldOutLoss(report({ original: 0.909, filter: 0.8, data: 0.904, labeled: 1000 }, 0.5), 1000);
    assert.deepEqual(labelled, { loss: 0.5, measure: 'top-1' });
    assert.ok(labelled.loss <= 0.5);
    assert.deepEqual(heldOutLoss(report({ original: 0.9, filter: 0.8, data: 0.925, labeled: 40 }, 0.5), 40), { loss: -2.5, measure: 'top-1' });
  });

  test('without labels it is the share of images whose top-1 differs from the original\'s', () => {
    assert.deepEqual(heldOutLoss(report(null, 0.995), 1000), { loss: 0.5, measure: 'agreement' });
    assert.deepEqual(heldOutLoss(report(null, 38 / 40), 40), { loss: 5, measure: 'agreement' });
  });
});

describe('compress --max-loss', () => {
  /** A two-probe search that succeeds, checked as every search must be, with its loss measured as `measure`. */
  const search = async (limit: number, evalData: string, measure: string) => {
    const out = path.join(tempDir(), 'out');
    const run = await maxLoss(out, String(limit), '2', evalData);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.equal(report.maxLoss.measure, measure);
    return { out, run, report, chosen: checkSearch(report, limit, 2) };
  };

  test('labelled held-out images: the fastest probe within the limit is written, and evaluate finds the same loss on the written model', async () => {
    const limit = 2.5;
    const { out, run, report, chosen } = await search(limit, LABELLED, 'top-1');
    assert.equal(report.maxLoss.heldOut, 40);
    assert.match(run.stderr, new RegExp(`chose ${chosen.target}× \\(conv2=\\d+,conv3=\\d+, [\\d.]+× by MACs\\): loses ${chosen.loss.toFixed(2)} points of top-1, within ${limit}`));

    const correct = async (model: string) => {
      const r = await cli(['evaluate', model, '--data', LABELLED, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const e = JSON.parse(r.stdout);
      return { correct: e.correct as number, labelled: e.images.labeled as number };
    };
    const before = await correct(CHARCNN);
    const after = await correct(out);
    assert.equal(after.labelled, 40);
    assert.ok(Math.abs((100 * (before.correct - after.correct)) / after.labelled - chosen.loss) < 1e-9, `evaluate: ${before.correct} → ${after.correct} of 40; reported ${chosen.loss}`);
    assert.equal(report.accuracy.data, after.correct / 40);
  });

  test('unlabelled held-out images: the loss is of agreement with the original, as bench counts it on the written model', async () => {
    const limit = 10;
    const { out, chosen } = await search(limit, UNLABELLED, 'agreement');
    const bench = await cli(['bench', CHARCNN, out, '--data', UNLABELLED, '--batch', '2', '--runs', '1', '--warmup', '0', '--json']);
    assert.equal(bench.code, 0, bench.stderr);
    const agreement = JSON.parse(bench.stdout).agreement;
    assert.ok(Math.abs(100 * (1 - agreement) - chosen.loss) < 1e-9, `bench agreement ${agreement}; reported loss ${chosen.loss}`);
  });

  test('a limit even the smallest probe exceeds: one line saying so and what to do, nothing written', async () => {
    const parent = tempDir();
    const out = path.join(parent, 'out');
    const run = await maxLoss(out, '0', '1', UNLABELLED, '8');
    assert.equal(run.code, 1);
    assert.match(errorLine(run), /^lowrank: --max-loss 0: even the smallest probe, [\d.]+× \(conv2=\d+,conv3=\d+\), loses [\d.]+ points of agreement on 40 held-out images; allow more loss, or more --probes/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    assert.deepEqual(fs.readdirSync(parent), [], 'nothing written');
  });
});
