/**
 * Bad input that used to pass silently, fail late or as an internal error: non-finite weights and
 * activations, absurd flag values, broken entries under --data, models images cannot feed, and
 * accuracies that cannot mean anything.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../../src/runtime/backend.js';
import { numberFlag } from '../../src/cli/flags.js';
import { saveModel } from '../../src/model/io.js';
import { CHARCNN, FASHION_TEST, FASHION_TRAIN, cli, errorLine, imageSubset, runCli, tempDir, type CliRun } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

const dirs: string[] = [];
const temp = (): string => {
  const d = tempDir();
  dirs.push(d);
  return d;
};
after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

async function save(model: tf.LayersModel): Promise<string> {
  const dir = path.join(temp(), 'model');
  await saveModel(model, dir);
  return dir;
}

/** conv → conv → flatten → dense (`outputs` units) on 8×8×1 images; `edit` may change the weights before saving. */
async function smallModel(edit: (weights: tf.Tensor[]) => tf.Tensor[] = (w) => w, outputs = 10): Promise<string> {
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ name: 'conv1', inputShape: [8, 8, 1], filters: 4, kernelSize: 3 }),
      tf.layers.conv2d({ name: 'conv2', filters: 4, kernelSize: 3 }),
      tf.layers.flatten({ name: 'flat' }),
      tf.layers.dense({ name: 'dense', units: outputs }),
    ],
  });
  model.setWeights(edit(model.getWeights()));
  return save(model);
}

/** `n` fixture images of each of the first `classes` classes. */
function imageFolder(n: number, classes = 2, from = FASHION_TRAIN): string {
  const dir = imageSubset(from, n, classes);
  dirs.push(dir);
  return dir;
}

/** Runs the CLI in this process, or with `runner` = runCli in a fresh one, and expects a one-line user error. */
async function expectUserError(args: string[], pattern: RegExp, runner: (args: string[]) => CliRun | Promise<CliRun> = cli): Promise<string> {
  const run = await runner(args);
  assert.equal(run.code, 1, run.stderr);
  assert.match(errorLine(run), pattern);
  assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack trace');
  return run.stderr;
}

const cheapFit = ['--layers', 'conv3', '--rank', '8', '--iterations', '2', '--batch', '4'];
/** bench flags for runs whose timings no test reads: one batch size, not 1 (which adds the fixed-overhead timing of every layer). */
const quickBench = ['--batch', '2', '--runs', '1', '--warmup', '0'];

describe('non-finite weights are named by layer', () => {
  let damaged: string;
  before(async () => {
    // conv2's kernel gets 3 NaNs, its bias one Inf: the kernel is reported first.
    damaged = await smallModel((w) => w.map((t, i) => {
      if (i === 2) return tf.tensor(Float32Array.from(t.dataSync(), (v, k) => (k < 3 ? NaN : v)), t.shape);
      if (i === 3) return tf.tensor(Float32Array.from(t.dataSync(), (v, k) => (k === 0 ? Infinity : v)), t.shape);
      return t;
    }));
  });
  const message = /layer conv2: kernel has 3 NaN values; the model file is damaged or was saved from a diverged training run/;

  test('inspect', async () => {
    await expectUserError(['inspect', damaged], message, runCli);
  });
  test('compress', async () => {
    await expectUserError(['compress', damaged, '--layers', 'conv2', '--rank', '1', '--out', path.join(temp(), 'out')], message);
  });
  test('bench (either side)', async () => {
    await expectUserError(['bench', damaged, damaged, '--runs', '1', '--warmup', '0'], message);
  });
  test('an infinite bias', async () => {
    const inf = await smallModel((w) => w.map((t, i) => (i === 1 ? tf.fill(t.shape, -Infinity) : t)));
    await expectUserError(['inspect', inf], /layer conv1: bias has 4 infinite values/);
  });
});

describe('non-finite activations name the layer and the preprocessing flags', () => {
  test('a --scale past float32 is refused at once', async () => {
    await expectUserError(['bench', CHARCNN, CHARCNN, '--data', imageFolder(1), '--scale', '1e38'], /--scale 1e38 --offset 0: pixels would reach 2\.55e\+40, beyond float32/);
  });
  test('compress --data: an activation that overflows inside the network, before any factorizing', async () => {
    const stderr = await expectUserError(
      ['compress', CHARCNN, ...cheapFit, '--out', path.join(temp(), 'out'), '--data', imageFolder(3), '--scale', '1e36'],
      /the output of layer conv1 holds \d+ (NaN|infinite) .*on these images .*--scale, --offset, --standardize/,
    );
    assert.doesNotMatch(stderr, /factorizing/);
  });
  test('bench --data: the overflowing layer, before any timing', async () => {
    const stderr = await expectUserError(['bench', CHARCNN, CHARCNN, '--data', imageFolder(2), '--scale', '1e36'], /the before model: the output of layer conv1 holds/);
    assert.doesNotMatch(stderr, /timing/);
  });
  test('bench: NaN outputs never read "agreement 100 %, max |Δ| NaN"', async () => {
    // Finite weights whose products overflow: conv2 turns [0, 1) inputs into Inf, the dense layer into NaN.
    const overflowing = await smallModel((w) => w.map((t, i) => (i === 2 ? tf.fill(t.shape, 1e30) : i === 0 ? tf.fill(t.shape, 1e10) : t)));
    const run = await cli(['bench', overflowing, overflowing, '--runs', '1', '--warmup', '0']);
    assert.equal(run.code, 1, run.stderr);
    assert.match(errorLine(run), /the before model: the output of layer conv2 holds \d+ infinite values on random inputs/);
    assert.doesNotMatch(run.stdout, /agreement/);
  });
});

describe('flag values', () => {
  test('--scale and --offset take fractions such as the help\'s 1/255', async () => {
    assert.equal(numberFlag('2/255', '--scale'), 2 / 255);
    assert.equal(numberFlag('-0.5', '--offset'), -0.5);
    for (const bad of ['1/0', '1/2/3', '/2', '', 'abc']) assert.throws(() => numberFlag(bad, '--scale'), /give a number or a fraction/);
    const run = await cli(['bench', CHARCNN, CHARCNN, '--data', imageFolder(2), '--scale', '2/255', '--offset', '-1/2', ...quickBench, '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.ok(JSON.parse(run.stdout).before.accuracy >= 0);
  });
  test('--iterations 1e9 and --batch 100000 are refused with the reason', async () => {
    const data = imageFolder(2);
    await expectUserError(['compress', CHARCNN, '--rank', '8', '--out', path.join(temp(), 'o'), '--data', data, '--iterations', '1e9'], /--iterations 1e9: at most 100000 \(/);
    await expectUserError(['compress', CHARCNN, '--rank', '8', '--out', path.join(temp(), 'o'), '--data', data, '--batch', '100000'], /--batch 100000: at most 4096 \(/);
    await expectUserError(['bench', CHARCNN, CHARCNN, '--batch', '1,100000'], /--batch 100000: at most 4096 \(/);
    await expectUserError(['bench', CHARCNN, CHARCNN, '--runs', '1e9'], /--runs 1e9: at most 10000 \(/);
  });
  test('bench refuses a batch whose activations exceed the memory budget', async () => {
    const big = await save(tf.sequential({ layers: [tf.layers.conv2d({ name: 'wide', inputShape: [512, 512, 3], filters: 64, kernelSize: 3, padding: 'same' })] }));
    await expectUserError(['bench', big, big, '--batch', '1,64'], /--batch 64: about [\d.]+ MiB of activations \(67\.00 MiB per example in the largest layer\), over the 2048\.00 MiB budget; give at most 30/);
  });
  test('bench reports progress while timing', async () => {
    const run = await cli(['bench', CHARCNN, CHARCNN, '--batch', '2', '--runs', '4', '--warmup', '1', '--per-layer']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /timing batch 2: 0\/11 runs\n.*timing batch 2: \d+\/11 runs, ETA/s);
    assert.match(run.stderr, /timing layers inside the model runs at batch 2: \d+\/11 runs in/);
  });
  test('a too-long --out is refused before any work', async () => {
    const stderr = await expectUserError(['compress', CHARCNN, '--rank', '8', '--out', path.join(temp(), 'x'.repeat(250))], /--out .*: the name is too long for the file system; choose a shorter one/);
    assert.doesNotMatch(stderr, /factorizing/);
  });
});

describe('--data folders and models images cannot feed', () => {
  test('--labels naming a folder', async () => {
    await expectUserError(['bench', CHARCNN, CHARCNN, '--data', imageFolder(1), '--labels', temp()], /--labels .*: is a folder, not a regular file; give a text file of class names/);
  });
  test('a dangling symlink, a symlink loop and a link back up the tree are skipped and counted', async () => {
    const data = imageFolder(2);
    const cls = path.join(data, fs.readdirSync(data)[0]);
    fs.symlinkSync(path.join(data, 'gone.png'), path.join(cls, 'dangling.png'));
    fs.symlinkSync(path.join(cls, 'loop.png'), path.join(cls, 'loop.png'));
    fs.symlinkSync(data, path.join(cls, 'up'));
    const run = await cli(['bench', CHARCNN, CHARCNN, '--data', data, ...quickBench, '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /skipped 3 unreadable or non-image files/);
    assert.equal(JSON.parse(run.stdout).examples, 4);
  });
  test('an unreadable entry is skipped and counted', { skip: process.getuid?.() === 0 ? 'root reads everything' : false }, async () => {
    const data = imageFolder(2);
    const cls = path.join(data, fs.readdirSync(data)[1]);
    fs.mkdirSync(path.join(cls, 'locked'));
    fs.chmodSync(path.join(cls, 'locked'), 0);
    const run = await cli(['bench', CHARCNN, CHARCNN, '--data', data, ...quickBench]);
    fs.chmodSync(path.join(cls, 'locked'), 0o700);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /skipped 1 unreadable or non-image file \(locked\)/);
  });
  test('bench on a two-input model', async () => {
    const a = tf.input({ shape: [4] });
    const b = tf.input({ shape: [4] });
    const sum = tf.layers.add().apply([a, b]) as tf.SymbolicTensor;
    const twoInputs = await save(tf.model({ inputs: [a, b], outputs: tf.layers.dense({ units: 2 }).apply(sum) as tf.SymbolicTensor }));
    await expectUserError(['bench', twoInputs, twoInputs], /the model takes 2 inputs; bench feeds models with a single input only/);
  });
  test('compress --data refuses a 4-channel model before factorizing', async () => {
    const rgba = await save(tf.sequential({
      layers: [
        tf.layers.conv2d({ name: 'a', inputShape: [12, 12, 4], filters: 8, kernelSize: 3 }),
        tf.layers.conv2d({ name: 'b', filters: 8, kernelSize: 3 }),
      ],
    }));
    const stderr = await expectUserError(['compress', rgba, '--layers', 'b', '--rank', '2', '--out', path.join(temp(), 'out'), '--data', imageFolder(2)], /the model takes 4-channel input; images can feed 1- or 3-channel models only/);
    assert.doesNotMatch(stderr, /factorizing/);
  });
  test('compress --data refuses a two-input model before factorizing', async () => {
    const a = tf.input({ shape: [12, 12, 1] });
    const b = tf.input({ shape: [12, 12, 1] });
    const sum = tf.layers.add().apply([a, b]) as tf.SymbolicTensor;
    const conv = tf.layers.conv2d({ name: 'c', filters: 8, kernelSize: 3 }).apply(tf.layers.conv2d({ name: 'p', filters: 8, kernelSize: 3 }).apply(sum) as tf.SymbolicTensor);
    const twoInputs = await save(tf.model({ inputs: [a, b], outputs: conv as tf.SymbolicTensor }));
    const stderr = await expectUserError(['compress', twoInputs, '--layers', 'c', '--rank', '2', '--out', path.join(temp(), 'out'), '--data', imageFolder(2)], /the model takes 2 inputs; images can feed a model with a single image input only/);
    assert.doesNotMatch(stderr, /factorizing/);
  });
});

describe('accuracy that cannot mean anything', () => {
  test('a --labels file with 11 names for 10 outputs', async () => {
    const labels = path.join(temp(), 'labels.txt');
    fs.writeFileSync(labels, `${fs.readdirSync(FASHION_TEST).sort().join('\n')}\nextra\n`);
    await expectUserError(['bench', CHARCNN, CHARCNN, '--data', imageFolder(1), '--labels', labels], /--labels .*: lists 11 class names but the model has 10 outputs; give one name per output, in output order/);
  });
  test('a model with 4 outputs scored against 10 class folders: a warning and no accuracy', async () => {
    const four = await smallModel((w) => w, 4);
    const run = await cli(['bench', four, four, '--data', imageFolder(1, 10), ...quickBench, '--json']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /warning: accuracy not counted: .* has 10 class folders but the model has 4 outputs, so the folders are not its classes; give --labels/);
    const r = JSON.parse(run.stdout);
    assert.equal(r.before.accuracy, undefined);
    assert.equal(r.agreement, 1);
  });
  test('the original model near chance: a hint at the preprocessing', async () => {
    const run = await cli(['bench', CHARCNN, CHARCNN, '--data', imageFolder(3, 10, FASHION_TEST), '--scale', '1/65025', ...quickBench]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /warning: the original model's top-1 accuracy on the 30 labelled images is only [\d.]+%, near chance \(10\.0% for 10 classes\): the preprocessing \(--scale, --offset, --standardize\) or the class order \(--labels\) is probably wrong/);
    const fine = await cli(['bench', CHARCNN, CHARCNN, '--data', imageFolder(3, 10, FASHION_TEST), ...quickBench]);
    assert.doesNotMatch(fine.stderr, /near chance/);
  });
});

describe('every numeric flag goes through one parser with bounds', () => {
  const out = () => path.join(temp(), 'o');
  test('sweep caps --runs and --warmup like bench', async () => {
    for (const flag of ['--runs', '--warmup']) {
      const stderr = await expectUserError(['sweep', CHARCNN, '--speedups', '2', '--data', imageFolder(1), '--out', out(), flag, '1e9'], new RegExp(`${flag} 1e9: at most 10000 \\(`));
      assert.doesNotMatch(stderr, /measuring|sweep: /);
    }
  });
  test('--epochs has a cap', async () => {
    await expectUserError(['compress', CHARCNN, ...cheapFit, '--out', out(), '--data', imageFolder(1), '--finetune', '--epochs', '1e9'], /--epochs 1e9: at most 1000 \(/);
  });
  test('an empty value is refused, not read as 0', async () => {
    const data = imageFolder(1);
    await expectUserError(['compress', CHARCNN, '--layers', 'conv3', '--rank', '8', '--out', out(), '--data', data, '--iterations', ''], /--iterations '': give a whole number ≥ 0/);
    await expectUserError(['compress', CHARCNN, ...cheapFit, '--out', out(), '--data', data, '--seed', ''], /--seed '': give a whole number ≥ 0/);
    await expectUserError(['bench', CHARCNN, CHARCNN, '--warmup', ''], /--warmup '': give a whole number ≥ 0/);
  });
  test('--seed has a 32-bit cap', async () => {
    await expectUserError(['compress', CHARCNN, ...cheapFit, '--out', out(), '--data', imageFolder(1), '--seed', '1e300'], /--seed 1e300: at most 4294967295 \(seeds are 32-bit/);
  });
});

describe('conflicting or ignored flags: refused or warned by one table', () => {
  const out = () => path.join(temp(), 'o');
  test('refused before any work', async () => {
    const data = imageFolder(1);
    const cases: [string[], RegExp][] = [
      [['sweep', CHARCNN, '--speedups', '2,,4', '--data', data, '--out', out()], /--speedups 2,,4: an empty item in the list/],
      [['compress', CHARCNN, ...cheapFit, '--out', out(), '--data', data, '--joint', '--no-joint'], /--joint and --no-joint contradict each other/],
      [['compress', CHARCNN, '--rank', '8', '--scheme', '2', '--basis', 'shared', '--out', out()], /--basis applies to --scheme 1 only/],
      [['compress', CHARCNN, ...cheapFit, '--out', out(), '--data', data, '--offset', '1', '--standardize'], /--standardize replaces --scale and --offset/],
      [['bench', CHARCNN, CHARCNN, '--batch', '4,4'], /--batch 4,4: 4 is given twice/],
    ];
    for (const [args, pattern] of cases) {
      const stderr = await expectUserError(args, pattern);
      assert.doesNotMatch(stderr, /factorizing|timing|predicting/, args.join(' '));
    }
  });
  test('warned: --basis on layers scheme 1 does not replace, --threads on the cpu backend', async () => {
    const run = await cli(['compress', CHARCNN, '--scheme', '1', '--basis', 'shared', '--layers', 'conv4', '--rank', '2', '--out', out()]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /warning: --basis shared is ignored: scheme 1 replaces convs larger than 1×1, and --layers names only 1×1 convs and Dense layers \(conv4\)/);
    const twice = await cli(['compress', CHARCNN, '--layers', 'conv2', '--rank', '4', '--out', out(), '--rank', '2']);
    assert.equal(twice.code, 0, twice.stderr);
    assert.match(twice.stderr, /warning: --rank is given more than once: the last, 2, is used/);
    const cpu = await cli(['--backend', 'cpu', '--threads', '4', 'inspect', CHARCNN, '--no-spectra']);
    assert.equal(cpu.code, 0, cpu.stderr);
    assert.match(cpu.stderr, /warning: --threads applies to the wasm backend; the cpu backend computes on one thread: ignored/);
  });
  test('--rank naming a missing layer names --rank', async () => {
    await expectUserError(['compress', CHARCNN, '--rank', 'conv9=4', '--out', out()], /^lowrank: --rank: no layer named 'conv9'; eligible: /);
  });
});

describe('reports that would mislead', () => {
  test('--labels naming a class twice is refused', async () => {
    const labels = path.join(temp(), 'dup.txt');
    const classes = fs.readdirSync(FASHION_TEST).sort();
    fs.writeFileSync(labels, `${[...classes, classes[1]].join('\n')}\n`);
    await expectUserError(['evaluate', CHARCNN, '--data', imageFolder(1, 10, FASHION_TEST), '--labels', labels], /--labels .*dup\.txt: names the class '1_trouser' twice; give each class once/);
  });
  test('a tiny hold-out is warned about', async () => {
    const run = await cli(['compress', CHARCNN, '--layers', 'conv3', '--rank', '8', '--iterations', '0', '--out', path.join(temp(), 'o'), '--data', imageFolder(3), '--holdout', '1e-9']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /warning: only 1 held-out image: each moves the held-out accuracy by 100\.0 points, .*raise --holdout or give --eval-data \(at least 20\)/);
  });
  test('--eval-data holding the --data images (copies, by content) is warned about', async () => {
    const data = imageFolder(3);
    const run = await cli(['compress', CHARCNN, '--layers', 'conv3', '--rank', '8', '--iterations', '0', '--out', path.join(temp(), 'o'), '--data', data, '--eval-data', imageFolder(2)]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /warning: 4 of the 4 --eval-data images are also fitting images in --data \(e\.g\. .*\.png\): the held-out figures are not held out/);
    const apart = await cli(['compress', CHARCNN, '--layers', 'conv3', '--rank', '8', '--iterations', '0', '--out', path.join(temp(), 'o2'), '--data', data, '--eval-data', imageFolder(2, 2, FASHION_TEST)]);
    assert.equal(apart.code, 0, apart.stderr);
    assert.doesNotMatch(apart.stderr, /also fitting images/);
  });
});
