/** The realsize benchmark's Teachable-Machine-shaped model: folding the [-1, 1] pixel range into the first convolution, and the base of an export. */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import * as path from 'node:path';
import { foldPixelRange, teachableBase } from '../../bench/teachable.js';
import { saveModel } from '../../src/model/save.js';
import { CHARCNN, teachableModel, tempDir } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

/** MobileNetV2's stem: bottom/right zero padding, a valid stride-2 conv, then (without a bias) a batch norm with trained-looking statistics. */
function stem(bias: boolean): tf.LayersModel {
  const input = tf.input({ shape: [8, 8, 3] });
  let x = tf.layers.zeroPadding2d({ padding: [[0, 1], [0, 1]] }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2, useBias: bias, kernelInitializer: tf.initializers.glorotNormal({ seed: 1 }), biasInitializer: tf.initializers.randomNormal({ seed: 2 }) }).apply(x) as tf.SymbolicTensor;
  if (!bias) {
    x = tf.layers.batchNormalization({
      gammaInitializer: tf.initializers.randomUniform({ minval: 0.5, maxval: 2, seed: 3 }),
      betaInitializer: tf.initializers.randomNormal({ seed: 4 }),
      movingMeanInitializer: tf.initializers.randomNormal({ seed: 5 }),
      movingVarianceInitializer: tf.initializers.randomUniform({ minval: 0.1, maxval: 1, seed: 6 }),
    }).apply(x) as tf.SymbolicTensor;
  }
  return tf.model({ inputs: input, outputs: x });
}

describe('foldPixelRange', () => {
  for (const bias of [false, true]) {
    test(`${bias ? 'into the bias' : 'into the batch norm after a conv without bias'}: [-1, 1] pixels give the original's [0, 1] outputs except where the conv sees the padding`, () => {
      const original = stem(bias);
      const folded = stem(bias);
      foldPixelRange(folded);
      const x01 = tf.randomUniform([2, 8, 8, 3], 0, 1, 'float32', 7);
      const expected = original.predict(x01) as tf.Tensor4D;
      const actual = folded.predict(x01.mul(2).sub(1)) as tf.Tensor4D;
      const diff = actual.sub(expected).abs();
      // As on a 224 px MobileNetV2: the last output row and column (3) read the padded row/column 8.
      const inner = diff.slice([0, 0, 0, 0], [-1, 3, 3, -1]).max().dataSync()[0];
      assert.ok(inner < 1e-5, `interior differs by ${inner}`);
      const edge = diff.max().dataSync()[0];
      assert.ok(edge > 1e-2, `the padded border should stand for grey now, yet differs by only ${edge}`);
    });
  }
});

describe('teachableBase', () => {
  test('takes the functional base out of a Teachable Machine export, and refuses another model', async () => {
    const exported = teachableModel(true);
    const dir = path.join(tempDir(), 'export');
    await saveModel(exported, dir);
    const base = await teachableBase(path.join(dir, 'model.json'));
    assert.equal(base.name, 'mobilenet');
    const x = tf.randomUniform([2, 16, 16, 3], -1, 1, 'float32', 9);
    const inner = ((exported.layers[0] as tf.Sequential).layers[0] as tf.LayersModel).predict(x) as tf.Tensor;
    const ours = base.predict(x) as tf.Tensor;
    assert.deepEqual(ours.shape, [2, 8, 8, 32]);
    assert.ok(ours.sub(inner).abs().max().dataSync()[0] < 1e-5, 'the same base, weights included');
    await assert.rejects(teachableBase(CHARCNN), /is not a Teachable Machine image export/);
    exported.dispose();
  });
});
