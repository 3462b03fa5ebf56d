/**
 * The Adam steps' shards (src/reconstruct/shards.ts): worker threads compute exactly what the
 * calling thread computes, for every scheme variant, and a failing shard gives the same error.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { loadModel } from '../../src/model/io.js';
import type { CachedSamples } from '../../src/data/store.js';
import { ShardPool, localRunner, shardImages, shardsOf, type StepRunner, type StepSums } from '../../src/reconstruct/shards.js';
import { schemeFor, type Factorization } from '../../src/schemes/index.js';
import { mulberry32 } from '../../src/runtime/random.js';
import { CHARCNN, SCHEME_VARIANTS } from '../helpers.js';
import { compressModel } from '../../src/commands/compress.js';

const IMAGES = 40;

/** Seeded samples of the layer's input and response shapes. */
function randomSamples(f: Factorization, seed: number): CachedSamples {
  const g = f.target.geometry;
  const random = mulberry32(seed);
  const fill = (n: number) => Float32Array.from({ length: n }, () => random.uniform() - 0.5);
  const shared = (n: number) => {
    const a = new Float32Array(new SharedArrayBuffer(n * 4));
    a.set(fill(n));
    return a;
  };
  return {
    x: shared(IMAGES * g.inH * g.inW * g.C),
    y: shared(IMAGES * g.outH * g.outW * g.N),
    xShape: [g.inH, g.inW, g.C],
    rowsPerImage: g.outH * g.outW,
    yCols: g.N,
  };
}

/** Three steps from the filter-reconstruction factors, nudged between steps as a fit would. */
async function threeSteps(runner: StepRunner, f: Factorization): Promise<StepSums[]> {
  f.factors.forEach((w, p) => runner.values[p].set(w.values));
  const out: StepSums[] = [];
  for (let step = 0; step < 3; step++) {
    const indices = Array.from({ length: 32 }, (_, i) => (i * 7 + step * 5) % IMAGES);
    const sums = await runner.step(indices);
    out.push(sums);
    runner.values.forEach((v, p) => v.forEach((x, i) => (v[i] = x - 1e-3 * Math.sign(sums.grads[p][i]))));
  }
  return out;
}

describe('Adam step shards on worker threads', () => {
  let pool: ShardPool;
  before(async () => {
    await useBackend('wasm');
    pool = new ShardPool(2);
  });
  after(() => pool.terminate());

  for (const variant of SCHEME_VARIANTS) {
    test(`${variant.title}: two workers give bit-identical sums to the calling thread, and the recipe rebuilds the scheme`, async () => {
      const { model } = await loadModel(CHARCNN);
      const result = await compressModel(model, { ...variant, rank: 8, layers: ['conv2'] });
      const f = result.factorizations[0];
      assert.deepEqual(
        [schemeFor(f.scheme.recipe).id, schemeFor(f.scheme.recipe).label],
        [f.scheme.id, f.scheme.label],
      );
      const form = f.scheme.factored(f.target, f.rank);
      const shapes = [...f.factors.map((w) => w.shape), [f.target.geometry.N]];
      const samples = randomSamples(f, 3);
      // conv2 is costly enough per image for a 32-image minibatch to make two shards.
      assert.equal(shardsOf(Array.from({ length: 32 }, (_, i) => i), shardImages(form)).length, 2);
      const local = await threeSteps(localRunner(form, samples, shapes, true), f);
      const workers = pool.runner(form, f, samples, shapes, true);
      const remote = await threeSteps(workers, f);
      workers.dispose();
      form.dispose();
      for (const [s, sums] of remote.entries()) {
        assert.equal(sums.sse, local[s].sse, `step ${s}: squared error`);
        assert.equal(sums.rows, local[s].rows);
        sums.grads.forEach((g, p) => assert.ok(Buffer.from(g.buffer, g.byteOffset, g.byteLength).equals(Buffer.from(local[s].grads[p].buffer, local[s].grads[p].byteOffset, local[s].grads[p].byteLength)), `step ${s}, parameter ${p}`));
      }
      model.dispose();
    });
  }

  test('a non-finite sample: the same one-line error from a worker as from the calling thread', async () => {
    const { model } = await loadModel(CHARCNN);
    const f = (await compressModel(model, { ...SCHEME_VARIANTS[0], rank: 8, layers: ['conv2'] })).factorizations[0];
    const form = f.scheme.factored(f.target, f.rank);
    const shapes = [...f.factors.map((w) => w.shape), [f.target.geometry.N]];
    const samples = randomSamples(f, 4);
    samples.y[5] = Infinity;
    const failure = async (runner: StepRunner) => {
      f.factors.forEach((w, p) => runner.values[p].set(w.values));
      try {
        await runner.step(Array.from({ length: 32 }, (_, i) => i));
      } catch (err) {
        return err as Error;
      } finally {
        runner.dispose();
      }
      assert.fail('the step did not fail');
    };
    const local = await failure(localRunner(form, samples, shapes, true));
    const remote = await failure(pool.runner(form, f, samples, shapes, true));
    form.dispose();
    assert.equal(remote.name, 'UserError');
    assert.equal(remote.message, local.message);
    assert.match(remote.message, /NaN or Inf values .*check the preprocessing/);
    model.dispose();
  });

  test('a worker that stops: the step fails instead of waiting forever', { timeout: 60_000 }, async () => {
    const { model } = await loadModel(CHARCNN);
    const f = (await compressModel(model, { ...SCHEME_VARIANTS[0], rank: 8, layers: ['conv2'] })).factorizations[0];
    const form = f.scheme.factored(f.target, f.rank);
    const doomed = new ShardPool(2);
    const runner = doomed.runner(form, f, randomSamples(f, 5), [...f.factors.map((w) => w.shape), [f.target.geometry.N]], true);
    const step = runner.step(Array.from({ length: 32 }, (_, i) => i));
    // As if it crashed: the worker thread ends while its shard is pending.
    await (doomed as unknown as { workers: { terminate(): Promise<number> }[] }).workers[0].terminate();
    await assert.rejects(step, /a fit worker stopped/);
    doomed.terminate();
    form.dispose();
    model.dispose();
  });
});
