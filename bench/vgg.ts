/**
 * VGG16-sized benchmarks (random weights, 138M parameters): inspect with the energy ranks, and
 * Scheme 2 filter-reconstruction compression of every 3×3 conv at a quarter of full rank.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../src/runtime/backend.js';
import { saveModel } from '../src/model/io.js';
import { WORK, folderBytes, heading, markdownTable, mib, timeCli } from './common.js';

const VGG_BLOCKS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]];

export async function ensureVgg16(): Promise<string> {
  const dir = path.join(WORK, 'vgg16');
  if (fs.existsSync(path.join(dir, 'model.json'))) return dir;
  await useBackend('wasm');
  const layers: tf.layers.Layer[] = [];
  VGG_BLOCKS.forEach((block, b) => {
    block.forEach((filters, i) => {
      layers.push(tf.layers.conv2d({
        name: `block${b + 1}_conv${i + 1}`, filters, kernelSize: 3, padding: 'same', activation: 'relu',
        ...(layers.length === 0 ? { inputShape: [224, 224, 3] } : {}),
        kernelInitializer: tf.initializers.randomNormal({ stddev: 0.02, seed: layers.length + 1 }),
      }));
    });
    layers.push(tf.layers.maxPooling2d({ name: `block${b + 1}_pool`, poolSize: 2 }));
  });
  layers.push(tf.layers.flatten({ name: 'flatten' }));
  for (const [name, units, activation] of [['fc1', 4096, 'relu'], ['fc2', 4096, 'relu'], ['predictions', 1000, 'softmax']] as const) {
    layers.push(tf.layers.dense({ name, units, activation, kernelInitializer: tf.initializers.randomNormal({ stddev: 0.01, seed: units }) }));
  }
  const model = tf.sequential({ name: 'vgg16', layers });
  await saveModel(model, dir, { force: true });
  model.dispose();
  return dir;
}

/** "block1_conv1=2,…": a quarter of each 3×3 conv's Scheme 2 full rank min(3C, 3N). */
function quarterRanks(): string {
  const parts: string[] = [];
  let C = 3;
  VGG_BLOCKS.forEach((block, b) => block.forEach((N, i) => {
    parts.push(`block${b + 1}_conv${i + 1}=${Math.max(1, Math.floor(Math.min(3 * C, 3 * N) / 4))}`);
    C = N;
  }));
  return parts.join(',');
}

export async function runVggBench(): Promise<void> {
  const dir = await ensureVgg16();
  const weightBytes = folderBytes(dir) - fs.statSync(path.join(dir, 'model.json')).size;
  heading('VGG16-sized model (138M parameters, random weights), wasm backend');
  const inspect = timeCli(['--backend', 'wasm', 'inspect', dir, '--json']);
  const out = path.join(WORK, 'vgg16-scheme2');
  const compress = timeCli(['--backend', 'wasm', 'compress', dir, '--scheme', '2', '--rank', quarterRanks(), '--out', out, '--force', '--json']);
  const report = JSON.parse(compress.stdout);
  markdownTable(
    ['task', 'wall (s)', 'target (s)', 'peak RSS (MiB)', 'RSS / weight bytes', 'memory target'],
    [
      ['inspect with energy ranks', (inspect.wallMs / 1000).toFixed(1), '< 20', inspect.maxRssMiB.toFixed(0), (inspect.maxRssMiB / mib(weightBytes)).toFixed(2), ''],
      ['compress: scheme 2, 13 convs, quarter rank', (compress.wallMs / 1000).toFixed(1), '< 30', compress.maxRssMiB.toFixed(0), (compress.maxRssMiB / mib(weightBytes)).toFixed(2), '< 3×'],
    ],
  );
  process.stdout.write(`\nweights ${mib(weightBytes).toFixed(0)} MiB; compressed ${report.layers.length} layers, theoretical speedup ${report.theoreticalSpeedup.toFixed(2)}×; worst filter error ${Math.max(...report.layers.map((l: any) => l.filterError)).toFixed(3)}\n`);
}
