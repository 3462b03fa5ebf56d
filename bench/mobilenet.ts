/**
 * The channel scheme on a model of the Teachable Machine shape: a MobileNet-v2-style network
 * (224×224×3, width 0.35, inverted residual blocks of 1×1 expand / 3×3 depthwise / 1×1 project)
 * nested in a Sequential with a Dense head, seeded random weights, built and saved at benchmark
 * time. Reports the theoretical speedup the channel scheme can reach, full-rank exactness, measured
 * wasm speed at batch 1 and 8, and `compress --data` on 200 images (wall and CPU time, peak RSS, on
 * one thread; the load average says how busy the machine was).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../src/runtime/backend.js';
import { convGeometry } from '../src/model/cost.js';
import { loadModel, saveModel } from '../src/model/io.js';
import { listLayers } from '../src/model/layers.js';
import { filterCandidates, formatRanks, ranksForSpeedup, theoreticalSpeedup } from '../src/plan/ranks.js';
import { channel, selectSchemes } from '../src/schemes/index.js';
import { ROOT, WORK, heading, markdownTable, timeCli } from './common.js';

const TRAIN_IMAGES = path.join(ROOT, 'fixtures', 'fashion', 'train');
const ALPHA = 0.35;
const CLASSES = 10;
/** `compress --data`: fitting images and the targets for them. */
const DATA_IMAGES = 200;
const TARGET_SECONDS = 60;
const TARGET_RSS_MIB = 1024;
/** Teachable Machine's preprocessing: pixels to [-1, 1]. */
const PIXELS = ['--scale', String(1 / 127.5), '--offset', '-1'];

/** Keras' _make_divisible: channels rounded to a multiple of 8, never 10 % below the target. */
function divisible(v: number, d = 8): number {
  const out = Math.max(d, Math.floor((v + d / 2) / d) * d);
  return out < 0.9 * v ? out + d : out;
}

function mobileNetV2(): tf.LayersModel {
  let seed = 1;
  const init = () => ({ kernelInitializer: tf.initializers.heNormal({ seed: seed++ }), biasInitializer: tf.initializers.randomNormal({ stddev: 0.05, seed: seed++ }) });
  const conv = (x: tf.SymbolicTensor, name: string, filters: number, kernel: number, strides: number, activation: 'relu6' | 'linear') =>
    tf.layers.conv2d({ name, filters, kernelSize: kernel, strides, padding: 'same', activation, ...init() }).apply(x) as tf.SymbolicTensor;
  const input = tf.input({ shape: [224, 224, 3] });
  let x = conv(input, 'Conv1', divisible(32 * ALPHA), 3, 2, 'relu6');
  let channels = divisible(32 * ALPHA);
  const blocks: [number, number, number, number][] = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]];
  let id = 0;
  for (const [t, c, n, s] of blocks) {
    const out = divisible(c * ALPHA);
    for (let i = 0; i < n; i++) {
      const name = `block_${id++}`;
      let h = x;
      if (t !== 1) h = conv(h, `${name}_expand`, channels * t, 1, 1, 'relu6');
      h = tf.layers.depthwiseConv2d({
        name: `${name}_depthwise`, kernelSize: 3, strides: i === 0 ? s : 1, padding: 'same', activation: 'relu6',
        depthwiseInitializer: tf.initializers.heNormal({ seed: seed++ }),
      }).apply(h) as tf.SymbolicTensor;
      h = conv(h, `${name}_project`, out, 1, 1, 'linear');
      x = i > 0 && channels === out ? (tf.layers.add({ name: `${name}_add` }).apply([x, h]) as tf.SymbolicTensor) : h;
      channels = out;
    }
  }
  x = conv(x, 'Conv_1', 1280, 1, 1, 'relu6');
  x = tf.layers.globalAveragePooling2d({ name: 'global_average_pooling2d' }).apply(x) as tf.SymbolicTensor;
  const mobilenet = tf.model({ inputs: input, outputs: x, name: 'mobilenetv2_0.35_224' });
  return tf.sequential({
    layers: [
      mobilenet,
      tf.layers.dense({ name: 'dense_Dense1', units: 100, activation: 'relu', ...init() }),
      tf.layers.dense({ name: 'dense_Dense2', units: CLASSES, activation: 'softmax', ...init() }),
    ],
  });
}

/** The model saved under WORK (rebuilt when missing). */
async function savedModel(): Promise<string> {
  const dir = path.join(WORK, 'mobilenet-tm');
  if (!fs.existsSync(path.join(dir, 'model.json'))) {
    const model = mobileNetV2();
    await saveModel(model, dir, { force: true });
    model.dispose();
  }
  return dir;
}

export async function runMobilenetBench(): Promise<void> {
  await useBackend('wasm');
  const dir = await savedModel();
  const { model, topology } = await loadModel(dir);
  const layers = listLayers(model);
  const schemes = selectSchemes({ scheme: '2', basis: 'per-channel', separable: false });
  const candidates = layers.filter((l) => schemes.defaultRule(l, layers)?.picked).map((l) => l.name);
  const rankOne = new Map(candidates.map((n) => [n, 1]));
  const withErrors = filterCandidates(candidates.map((n) => layers.find((l) => l.name === n)!), () => channel, topology);
  model.dispose();

  heading('Teachable-Machine-shaped MobileNet-v2 (224×224×3, width 0.35, Dense head; random weights), channel scheme, wasm');
  const choice = ranksForSpeedup(layers, withErrors, 2);
  process.stdout.write(`${candidates.length} layers the default selection considers (1×1 convs and the first Dense layer); at rank 1 everywhere: ${theoreticalSpeedup(layers, withErrors, rankOne).toFixed(2)}× theoretical\n\n`);
  const rows: (string | number)[][] = [];
  for (const [title, ranks, allowSlower] of [
    ['full rank (exactness)', new Map(candidates.map((n) => [n, channel.fullRank(convGeometry(layers.find((l) => l.name === n)!))])), true],
    ['≥ 2× theoretical', choice!.ranks, false],
  ] as const) {
    const out = path.join(WORK, `mobilenet-${title.replace(/\W+/g, '-')}`);
    const c = timeCli(['--backend', 'wasm', 'compress', dir, '--rank', formatRanks(ranks as Map<string, number>), ...(allowSlower ? ['--allow-slower'] : []), '--out', out, '--force', '--json']);
    const report = JSON.parse(c.stdout);
    const b = JSON.parse(timeCli(['--backend', 'wasm', 'bench', dir, out, '--batch', '1,8', '--runs', '10', '--warmup', '2', '--json']).stdout);
    const at = (n: number) => b.batches.find((x: any) => x.batch === n);
    rows.push([
      title, `${report.theoreticalSpeedup.toFixed(2)}×`, `${at(1).speedup.toFixed(2)}×`, `${at(8).speedup.toFixed(2)}×`,
      `${(100 * b.agreement).toFixed(1)} %`, b.maxAbsDiff === undefined ? '' : Number(b.maxAbsDiff).toExponential(1),
    ]);
  }
  markdownTable(['ranks', 'theoretical', 'measured b=1', 'measured b=8', 'top-1 agreement', 'max |Δ output|'], rows);

  const out = path.join(WORK, 'mobilenet-data');
  const loadBefore = os.loadavg()[0];
  const run = timeCli([
    '--backend', 'wasm', '--threads', '1', 'compress', dir, '--rank', formatRanks(choice!.ranks), '--out', out, '--force', '--json',
    '--data', TRAIN_IMAGES, '--samples', String(DATA_IMAGES), '--holdout', '0.05', ...PIXELS,
  ]);
  const report = JSON.parse(run.stdout);
  const data = report.dataReconstruction;
  const kept = report.layers.filter((l: any) => l.kept === 'data').length;
  const mean = (k: 'filter' | 'data') => report.layers.reduce((a: number, l: any) => a + l.dataError[k], 0) / report.layers.length;
  const met = (ok: boolean) => (ok ? '✓' : '✗');
  process.stdout.write(`\n\`compress --data\` at the ≥ 2× ranks (${data.images.fit} fitting images, ${data.images.holdout} held out, joint, 1 thread; load average ${loadBefore.toFixed(1)} before, ${os.loadavg()[0].toFixed(1)} after):\n\n`);
  markdownTable(['wall (s)', 'CPU (s)', 'fit (s)', 'held-out evaluation (s)', 'peak RSS (MiB)', 'layers fitted / kept data', 'mean held-out output error: filter → data'], [[
    `${(run.wallMs / 1000).toFixed(1)} ${met(run.wallMs <= TARGET_SECONDS * 1000)}`, (run.cpuMs / 1000).toFixed(1), data.seconds.fit.toFixed(1), data.seconds.evaluate.toFixed(1),
    `${run.maxRssMiB.toFixed(0)} ${met(run.maxRssMiB <= TARGET_RSS_MIB)}`,
    `${report.layers.length} / ${kept}`, `${(100 * mean('filter')).toFixed(1)} % → ${(100 * mean('data')).toFixed(1)} %`,
  ]]);
  process.stdout.write(`\nTargets: ≤ ${TARGET_SECONDS} s and ≤ ${TARGET_RSS_MIB} MiB peak RSS for ${DATA_IMAGES} images.\n`);
}
