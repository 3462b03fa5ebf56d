/**
 * `npm run bench`: every benchmark behind the figures in README.md. Sections can be picked:
 * `node dist/bench/run.js cli vgg speed linalg reconstruct allocation finetune finetune-cifar mobilenet sweep threads browser
 * realsize` (default: all; realsize needs `--images <dir>` of natural photos, see bench/realsize.ts).
 */
import * as path from 'node:path';
import { ROOT, heading, markdownTable, timeCli } from './common.js';
import { runAllocationBench } from './allocation.js';
import { runBrowserBench } from './browser.js';
import { runFinetuneBench, runFinetuneCifarBench } from './finetune.js';
import { runLinalgBench } from './linalg.js';
import { runMobilenetBench } from './mobilenet.js';
import { runRealsizeBench } from './realsize.js';
import { runReconstructBench } from './reconstruct.js';
import { runSpeedBench } from './speed.js';
import { runSweepBench } from './sweep.js';
import { runThreadsBench } from './threads.js';
import { runVggBench } from './vgg.js';

/** `lowrank inspect` on the bundled fixture, wall time including Node start-up. */
async function runCliBench(): Promise<void> {
  heading('inspect on the bundled fixture (wall time including Node start-up)');
  const fixture = path.join(ROOT, 'fixtures', 'charcnn', 'model.json');
  const runs = [0, 1, 2].map(() => timeCli(['--backend', 'wasm', 'inspect', fixture]));
  const walls = runs.map((r) => r.wallMs / 1000).sort((a, b) => a - b);
  markdownTable(['task', 'median wall (s)', 'target (s)', 'peak RSS (MiB)'], [
    ['inspect fixtures/charcnn (with energy ranks)', walls[1].toFixed(2), '< 3', Math.max(...runs.map((r) => r.maxRssMiB)).toFixed(0)],
  ]);
}

const SECTIONS: Record<string, () => Promise<void>> = {
  cli: runCliBench,
  linalg: runLinalgBench,
  vgg: runVggBench,
  speed: () => runSpeedBench(4.5),
  reconstruct: runReconstructBench,
  allocation: runAllocationBench,
  finetune: runFinetuneBench,
  'finetune-cifar': runFinetuneCifarBench,
  mobilenet: runMobilenetBench,
  sweep: runSweepBench,
  threads: runThreadsBench,
  browser: runBrowserBench,
  realsize: () => runRealsizeBench(args, chosen.includes('realsize')),
};

// Options (`--images <dir>` of realsize) are not sections.
const args = process.argv.slice(2);
const chosen = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
for (const name of chosen.length ? chosen : Object.keys(SECTIONS)) {
  const section = SECTIONS[name];
  if (!section) {
    console.error(`unknown section '${name}': choose from ${Object.keys(SECTIONS).join(', ')}`);
    process.exit(2);
  }
  await section();
}
