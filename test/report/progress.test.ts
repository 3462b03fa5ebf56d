/**
 * Progress: the plain-line reporter (quiet phases show only once they last), and the slow steps
 * before a compress run's fits (the filter spectra, the first images' check) reporting as phases.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useBackend } from '../../src/runtime/backend.js';
import { stderrReporter } from '../../src/report/progress.js';
import { loadModel } from '../../src/model/io.js';
import { planCompression } from '../../src/plan/choose.js';
import { DEFAULT_SCHEME } from '../../src/schemes/index.js';
import { DEFAULT_PIXELS, listImages, probeImages } from '../../src/data/images.js';
import { CHARCNN, FASHION_TRAIN, recordingReporter } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** A plain-line reporter writing into `lines`, on a clock the test moves. */
function recorded() {
  const lines: string[] = [];
  const clock = { ms: 0 };
  const reporter = stderrReporter('', false, (t) => lines.push(t.trimEnd()), () => clock.ms);
  return { lines, clock, reporter };
}

describe('the plain-line reporter', () => {
  test('says when a phase starts, at its quarters and when it ends', () => {
    const { lines, clock, reporter } = recorded();
    const phase = reporter.phase('fitting', 8, 'images');
    for (let i = 1; i < 8; i++) {
      clock.ms += 100;
      phase.update(i);
    }
    phase.finish();
    assert.deepEqual(lines.map((l) => l.replace(/, ETA.*/, '').replace(/ in .*/, '')), ['fitting: 0/8 images', 'fitting: 2/8 images', 'fitting: 4/8 images', 'fitting: 6/8 images', 'fitting: 8/8 images']);
  });

  test('a quiet phase that ends in time says nothing', () => {
    const { lines, clock, reporter } = recorded();
    const phase = reporter.phase('spectra', 4, 'layers', { quietFor: 1000 });
    for (let i = 1; i < 4; i++) {
      clock.ms += 200;
      phase.update(i);
    }
    clock.ms += 200;
    phase.finish();
    assert.deepEqual(lines, []);
  });

  test('a quiet phase that lasts shows from its first update past the time, then as usual', () => {
    const { lines, clock, reporter } = recorded();
    const phase = reporter.phase('spectra', 10, 'layers', { quietFor: 1000 });
    for (let i = 1; i < 10; i++) {
      clock.ms += 400;
      phase.update(i);
    }
    phase.finish();
    assert.equal(lines[0].replace(/, ETA.*/, ''), 'spectra: 3/10 layers', 'shown at the first update past 1 s (1.2 s, 3 layers)');
    assert.match(lines[0], /ETA 2\.8 s/);
    assert.equal(lines.at(-1), 'spectra: 10/10 layers in 3.6 s');
    assert.ok(lines.length >= 3 && lines.length <= 5, lines.join('\n'));
  });

  test('a long phase between quarters still says where it is every 15 s', () => {
    const { lines, clock, reporter } = recorded();
    const phase = reporter.phase('choosing ranks by joint fits', 5, 'fits');
    for (let s = 1; s <= 40; s++) {
      clock.ms = s * 1000;
      phase.update(0, `fit 1: conv2: fitting ${s}/40 iterations`);
    }
    assert.deepEqual(lines, [
      'choosing ranks by joint fits: 0/5 fits',
      'choosing ranks by joint fits: 0/5 fits (fit 1: conv2: fitting 15/40 iterations)',
      'choosing ranks by joint fits: 0/5 fits (fit 1: conv2: fitting 30/40 iterations)',
    ]);
  });
});

describe('slow steps before the fits report progress', () => {
  test('the filter spectra of a --speedup plan are a phase over the chosen layers', async () => {
    const { model, topology } = await loadModel(CHARCNN);
    const { phases, reporter } = recordingReporter();
    const plan = planCompression(model, { ...DEFAULT_SCHEME, speedup: 2 }, topology, reporter);
    const spectra = phases.find((p) => /spectra/.test(p.label));
    assert.ok(spectra, `phases: ${phases.map((p) => p.label).join(', ')}`);
    assert.equal(spectra.total, plan.ranked.length + plan.skipped.filter((s) => s.byChoice).length);
    assert.equal(spectra.done, spectra.total);
    assert.ok(spectra.finished);
    assert.ok((spectra.options?.quietFor ?? 0) > 0, 'quick on small models: quiet');
    model.dispose();
  });

  test('the check of the first images counts each image, and checks fewer on a costly model', async () => {
    const { model } = await loadModel(CHARCNN);
    const entries = listImages(FASHION_TRAIN).entries.slice(0, 20);
    // MACs an image as the caller gives them: none known, a 5-GMAC model (25 G / 5 G), and one beyond any budget.
    for (const [macs, checked] of [[0, 16], [5e9, 5], [1e12, 4]] as const) {
      const { phases, reporter } = recordingReporter();
      await probeImages(model, entries, DEFAULT_PIXELS, 'charcnn', reporter, macs);
      assert.equal(phases.length, 1);
      assert.deepEqual([phases[0].total, phases[0].done, phases[0].finished], [checked, checked, true], `${macs} MACs an image`);
    }
    model.dispose();
  });
});
