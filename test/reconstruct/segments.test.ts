import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { DEFAULT_PIXELS, imageBatches, listImages, modelImageSize, type ImageEntry, type PixelOptions } from '../../src/data/images.js';
import { UserError } from '../../src/errors.js';
import { loadModel } from '../../src/model/io.js';
import { listLayers } from '../../src/model/layers.js';
import { ImageStore } from '../../src/data/store.js';
import { frontierThrough } from '../../src/reconstruct/segments.js';
import { makeTap } from '../../src/reconstruct/taps.js';
import { CHARCNN, FASHION_TRAIN, NESTED, RESIDUAL } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** Seven fixture images from several classes, in batches of 3 (the last one short). */
const ENTRIES: ImageEntry[] = listImages(FASHION_TRAIN).entries.filter((_, i) => i % 150 === 0).slice(0, 7);
const BATCH = 3;

async function storeFor(model: tf.LayersModel, pixels: PixelOptions = DEFAULT_PIXELS, budget?: number): Promise<ImageStore> {
  const store = new ImageStore(ENTRIES, modelImageSize(model, 'model'), pixels, BATCH, { skipped: [], decoded: 0 }, budget);
  await store.load();
  return store;
}

function assertSame(actual: tf.Tensor, expected: tf.Tensor, what: string): void {
  assert.deepEqual(actual.shape, expected.shape, what);
  assert.deepEqual(Array.from(actual.dataSync()), Array.from(expected.dataSync()), what);
}

/** The Conv2D and Dense layers of a model, in model order (nested ones included). */
const linearLayers = (model: tf.LayersModel) => listLayers(model).filter((l) => l.className === 'Conv2D' || l.className === 'Dense').map((l) => l.name);

/** A Sequential called on a tensor inside a functional model (the fixture's nested model is its Sequential's first layer). */
function calledInside(): tf.LayersModel {
  const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotNormal({ seed }) });
  const inner = tf.sequential({
    name: 'inner',
    layers: [
      tf.layers.conv2d({ inputShape: [12, 12, 4], name: 'inner_conv', filters: 5, kernelSize: 3, activation: 'relu', ...init(1) }),
      tf.layers.conv2d({ name: 'inner_pointwise', filters: 6, kernelSize: 1, ...init(2) }),
    ],
  });
  const input = tf.input({ shape: [12, 12, 3] });
  const stem = tf.layers.conv2d({ name: 'outer_stem', filters: 4, kernelSize: 3, padding: 'same', ...init(3) }).apply(input) as tf.SymbolicTensor;
  const out = tf.layers.conv2d({ name: 'outer_out', filters: 2, kernelSize: 1, ...init(4) }).apply(inner.apply(stem) as tf.SymbolicTensor) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

describe('segment-by-segment execution (frontiers)', () => {
  const models: [string, () => Promise<tf.LayersModel>][] = [
    ['charcnn', async () => (await loadModel(CHARCNN)).model],
    ['residual (branches, two outputs)', async () => (await loadModel(RESIDUAL)).model],
    ['nested', async () => (await loadModel(NESTED)).model],
    ['a model called inside a model', async () => calledInside()],
  ];
  for (const [name, load] of models) {
    test(`${name}: every layer input and the output equal the whole model's, whatever part of the frontier fits the budget`, async () => {
      const model = await load();
      const names = linearLayers(model);
      const store = await storeFor(model);
      const tap = makeTap(model, names, true);
      const batches: tf.Tensor4D[] = [];
      for await (const b of store.batches()) batches.push(b.x);
      const expected = batches.map((x) => tap(x));
      // Unbounded, none kept (every request from the images), and about half the input's size.
      const [, h, w, c] = model.inputs[0].shape as number[];
      for (const budget of [Number.POSITIVE_INFINITY, 0, (ENTRIES.length * h * w * c * 4) / 2]) {
        const frontier = frontierThrough(model, names, store, budget, { withOutput: true });
        // Layer by layer over all batches, as a fit runs.
        for (let k = 0; k < names.length; k++) {
          for (let b = 0; b < batches.length; b++) {
            const input = await frontier.layerInput(k, b);
            assertSame(input, expected[b].inputs[k], `${names[k]}, batch ${b}, budget ${budget}`);
            input.dispose();
          }
        }
        for (let b = 0; b < batches.length; b++) {
          const output = await frontier.value(names.length, b);
          assertSame(output, expected[b].output!, `output, batch ${b}, budget ${budget}`);
          output.dispose();
        }
        frontier.dispose();
      }
      // Batch by batch on the backend, as the held-out evaluation runs.
      const onBackend = frontierThrough(model, names, store, Number.POSITIVE_INFINITY, { withOutput: true, onBackend: true });
      const before = tf.memory().numTensors;
      for (let b = 0; b < batches.length; b++) {
        for (let k = 0; k <= names.length; k++) {
          const v = k < names.length ? await onBackend.layerInput(k, b) : await onBackend.value(k, b);
          assertSame(v, k < names.length ? expected[b].inputs[k] : expected[b].output!, `on the backend: target ${k}, batch ${b}`);
          v.dispose();
        }
        onBackend.release(b);
        assert.equal(tf.memory().numTensors, before, 'a released batch leaves no tensor behind');
      }
      expected.forEach((e) => tf.dispose([...e.inputs, e.output!]));
      tf.dispose(batches);
      model.dispose();
    });
  }

  test('a layer whose weights change between requests is run with its new weights (the joint fit)', async () => {
    const { model } = await loadModel(CHARCNN);
    const store = await storeFor(model);
    for (const budget of [Number.POSITIVE_INFINITY, 0]) {
      const frontier = frontierThrough(model, ['conv2', 'conv3'], store, budget);
      for (let b = 0; b < store.batchCount; b++) (await frontier.value(0, b)).dispose();
      const conv2 = model.getLayer('conv2');
      const original = conv2.getWeights();
      conv2.setWeights(original.map((t) => t.mul(-0.5)));
      const tap = makeTap(model, ['conv3'], false);
      for await (const [b, batch] of enumerate(store.batches())) {
        const input = await frontier.layerInput(1, b);
        const expected = tap(batch.x).inputs[0];
        assertSame(input, expected, `conv3's input, batch ${b}, budget ${budget}`);
        tf.dispose([input, expected, batch.x]);
      }
      conv2.setWeights(original);
      frontier.dispose();
    }
    model.dispose();
  });

  test('a supplied layer output is what the next request reads (the layer does not run again), unless the batch keeps no frontier', async () => {
    const { model } = await loadModel(CHARCNN);
    const store = await storeFor(model);
    const conv2 = model.getLayer('conv2');
    const tap = makeTap(model, ['conv3'], false);
    for (const budget of [Number.POSITIVE_INFINITY, 0]) {
      const frontier = frontierThrough(model, ['conv2', 'conv3'], store, budget);
      for await (const [b, batch] of enumerate(store.batches())) {
        (await frontier.value(0, b)).dispose();
        // conv2's true output (conv3 reads it directly) doubled: a value the layer would never give.
        const truth = tap(batch.x).inputs[0];
        const supplied = truth.mul(2);
        frontier.supplyOutput(b, conv2, () => supplied.clone());
        const input = await frontier.layerInput(1, b);
        assertSame(input, budget > 0 ? supplied : truth, `conv3's input, batch ${b}, budget ${budget}`);
        tf.dispose([input, truth, supplied, batch.x]);
      }
      frontier.dispose();
    }
    model.dispose();
  });
});

test('a nested model called twice is refused with a one-line error (its inner tensors would mix)', async () => {
  const inner = tf.sequential({ name: 'twice', layers: [tf.layers.conv2d({ inputShape: [12, 12, 3], name: 'twice_conv', filters: 3, kernelSize: 1 })] });
  const input = tf.input({ shape: [12, 12, 3] });
  const model = tf.model({ inputs: input, outputs: inner.apply(inner.apply(input)) as tf.SymbolicTensor });
  const store = await storeFor(model);
  assert.throws(() => frontierThrough(model, [], store, 0), (err: Error) => err instanceof UserError && /twice is called more than once.*compress without --data/.test(err.message));
  model.dispose();
});

async function* enumerate<T>(items: AsyncIterable<T>): AsyncGenerator<[number, T]> {
  let i = 0;
  for await (const item of items) yield [i++, item];
}

describe('ImageStore', () => {
  // 24×24 images fed to 28×28 models: bilinear gives float pixels, sharp 8-bit ones.
  const variants: [string, PixelOptions][] = [
    ['sharp resize, scale and offset', { ...DEFAULT_PIXELS, scale: 1 / 127.5, offset: -1 }],
    ['tfjs bilinear resize', { ...DEFAULT_PIXELS, resize: 'bilinear' }],
    ['standardized', { ...DEFAULT_PIXELS, standardize: true }],
  ];
  for (const [name, pixels] of variants) {
    test(`${name}: kept pixels and pixels decoded again give the decoder's batches, from any image on`, async () => {
      const model = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [28, 28, 3], filters: 1, kernelSize: 1 })] });
      const size = modelImageSize(model, 'model');
      const reference: tf.Tensor4D[] = [];
      for await (const b of imageBatches(ENTRIES, size, ENTRIES.length, pixels, { skipped: [], decoded: 0 })) reference.push(b.x);
      for (const budget of [undefined, 0]) {
        const store = await storeFor(model, pixels, budget);
        for (const skip of [0, 4, ENTRIES.length]) {
          const parts: tf.Tensor4D[] = [];
          for await (const b of store.batches(skip)) parts.push(b.x);
          const what = `budget ${budget ?? 'default'}, from image ${skip}`;
          if (skip === ENTRIES.length) {
            assert.equal(parts.length, 0, what);
            continue;
          }
          const all = tf.concat(parts);
          const expected = reference[0].slice(skip);
          assertSame(all, expected, what);
          tf.dispose([all, expected, ...parts]);
        }
      }
      tf.dispose(reference);
      model.dispose();
    });
  }
});

test('running segments leaves no tensor behind, also through layers that make intermediates outside a tidy (ReLU with a max value)', async () => {
  const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotNormal({ seed }) });
  const input = tf.input({ shape: [28, 28, 1] });
  let h = tf.layers.conv2d({ name: 'c1', filters: 4, kernelSize: 3, ...init(1) }).apply(input) as tf.SymbolicTensor;
  h = tf.layers.reLU({ maxValue: 6 }).apply(h) as tf.SymbolicTensor;
  h = tf.layers.conv2d({ name: 'c2', filters: 4, kernelSize: 3, ...init(2) }).apply(h) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: h });
  const store = await storeFor(model);
  const before = tf.memory().numTensors;
  const frontier = frontierThrough(model, ['c2'], store, Number.POSITIVE_INFINITY, { withOutput: true });
  for (let b = 0; b < store.batchCount; b++) {
    tf.dispose([await frontier.value(0, b), await frontier.value(1, b)]);
  }
  frontier.dispose();
  assert.equal(tf.memory().numTensors, before);
  model.dispose();
});
