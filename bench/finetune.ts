/**
 * Fine-tuning by distillation on the bundled fixture: the charcnn's conv2+conv3 replaced by Scheme 2
 * at the ranks giving ≈12× and ≈16× theoretical whole-model speedup, data-reconstructed on
 * fixtures/fashion/train (1,000) and fine-tuned (`--finetune`, default settings), top-1 on
 * fixtures/fashion/test (1,000): original, filter-only, layer-wise data reconstruction and data
 * reconstruction + fine-tuning, with the time fine-tuning adds; each in a fresh CLI process on wasm.
 */
import * as path from 'node:path';
import { useBackend } from '../src/runtime/backend.js';
import { loadModel } from '../src/model/io.js';
import { listLayers } from '../src/model/layers.js';
import { filterCandidates, formatRanks, ranksForSpeedup } from '../src/plan/ranks.js';
import { schemeFor } from '../src/schemes/index.js';
import { ROOT, WORK, heading, markdownTable, timeCli } from './common.js';

const FIXTURE = path.join(ROOT, 'fixtures', 'charcnn', 'model.json');
const TRAIN = path.join(ROOT, 'fixtures', 'fashion', 'train');
const TEST = path.join(ROOT, 'fixtures', 'fashion', 'test');
/** Theoretical speedup → top-1 points the fine-tuned model may lose against the original. */
const TARGETS: [number, number][] = [[12, 0.5], [16, 1.0]];
/** Seconds fine-tuning may add. */
const TIME_TARGET = 180;

const pct = (x: number) => (100 * x).toFixed(1);

export async function runFinetuneBench(): Promise<void> {
  await useBackend('wasm');
  const fixture = await loadModel(FIXTURE);
  const layers = listLayers(fixture.model);
  const scheme = schemeFor({ scheme: '2', basis: 'per-channel', separable: false });
  heading('Fine-tuning: charcnn conv2+conv3, Scheme 2, fit on fashion/train (1,000), top-1 on fashion/test (1,000), wasm');
  const rows: (string | number)[][] = [];
  for (const [target, allowed] of TARGETS) {
    const choice = ranksForSpeedup(layers, filterCandidates(['conv2', 'conv3'].map((n) => layers.find((l) => l.name === n)!), () => scheme, fixture.topology), target)!;
    const run = timeCli([
      '--backend', 'wasm', 'compress', FIXTURE, '--scheme', '2', '--layers', 'conv2,conv3', '--rank', formatRanks(choice.ranks),
      '--out', path.join(WORK, `finetune-${target}`), '--force', '--data', TRAIN, '--eval-data', TEST, '--finetune', '--json',
    ]);
    const report = JSON.parse(run.stdout);
    const acc = report.accuracy;
    const f = report.finetune;
    // Points are counted in whole images (0.1 point of 1,000): round away float noise.
    const points100 = (a: number, b: number) => Math.round(1000 * (a - b)) / 10;
    const loss = points100(acc.original, acc.finetuned);
    const dataLoss = points100(acc.original, acc.data);
    const points = (x: number) => `${x >= 0 ? '−' : '+'}${Math.abs(x).toFixed(1)}`;
    rows.push([
      `${choice.theoreticalSpeedup.toFixed(2)}×`,
      formatRanks(choice.ranks),
      pct(acc.original),
      pct(acc.filter),
      `${pct(acc.data)} (${points(dataLoss)})`,
      `${pct(acc.finetuned)} (${points(loss)}${loss <= allowed ? ' ✓' : ` ✗ target ≤ ${allowed}`})`,
      `${pct(f.heldOut.error.data)} → ${pct(f.heldOut.error.finetuned)}`,
      `${f.bestEpoch} of ${f.epochs}${f.kept === 'data' ? ' (kept layer-wise)' : ''}`,
      `${f.seconds.toFixed(0)} s${f.seconds <= TIME_TARGET ? ' ✓' : ' ✗'}`,
      `${(run.wallMs / 1000).toFixed(0)} s`,
      `${run.maxRssMiB.toFixed(0)} MiB`,
    ]);
  }
  markdownTable(
    ['theoretical', 'ranks', 'original %', 'filter %', 'data %', 'data + fine-tuning %', 'held-out logit error %', 'epoch kept', 'fine-tuning time', 'whole run', 'peak RSS'],
    rows,
  );
}

const CIFAR = path.join(ROOT, 'fixtures', 'cifar', 'model.json');
const CIFAR_TRAIN = path.join(ROOT, 'fixtures', 'cifar10', 'train');
const CIFAR_TEST = path.join(ROOT, 'fixtures', 'cifar10', 'test');
/** Whole-model targets → top-1 points `--data --finetune` may lose against the original (none at 4×). */
const CIFAR_TARGETS: [number, number | null][] = [[2, 1.0], [3, 2.5], [4, null]];
/** Seconds a whole run may take. */
const CIFAR_TIME_TARGET = 300;

/**
 * The CIFAR-10 fixture at 2×, 3× and 4× (`--speedup`, ranks chosen by joint fits), fitted on its
 * 5,000 training images and scored on its 1,000 test images: original, filter reconstruction, data
 * reconstruction and data reconstruction + fine-tuning (default settings), with the whole run's time.
 */
export async function runFinetuneCifarBench(): Promise<void> {
  heading('Fine-tuning: CIFAR-10 fixture, --speedup 2/3/4, fit on cifar10/train (5,000), top-1 on cifar10/test (1,000), wasm');
  const rows: (string | number)[][] = [];
  for (const [target, allowed] of CIFAR_TARGETS) {
    const run = timeCli([
      '--backend', 'wasm', 'compress', CIFAR, '--speedup', String(target), '--out', path.join(WORK, `finetune-cifar-${target}`), '--force',
      '--data', CIFAR_TRAIN, '--eval-data', CIFAR_TEST, '--finetune', '--json',
    ]);
    const report = JSON.parse(run.stdout);
    const acc = report.accuracy;
    const f = report.finetune;
    const points100 = (a: number, b: number) => Math.round(1000 * (a - b)) / 10;
    const loss = points100(acc.original, acc.finetuned);
    const points = (x: number) => `${x >= 0 ? '−' : '+'}${Math.abs(x).toFixed(1)}`;
    const seconds = run.wallMs / 1000;
    rows.push([
      `${target}× (${report.theoreticalSpeedup.toFixed(2)}×)`,
      report.layers.map((l: { name: string; rank: number }) => `${l.name}=${l.rank}`).join(','),
      pct(acc.original),
      `${pct(acc.filter)} (${points(points100(acc.original, acc.filter))})`,
      `${pct(acc.data)} (${points(points100(acc.original, acc.data))})`,
      `${pct(acc.finetuned)} (${points(loss)}${allowed === null ? '' : loss <= allowed ? ' ✓' : ` ✗ target ≤ ${allowed}`})`,
      `${f.bestEpoch} of ${f.epochs}${f.kept === 'data' ? ' (kept layer-wise)' : ''}`,
      `${f.seconds.toFixed(0)} s`,
      `${seconds.toFixed(0)} s${seconds <= CIFAR_TIME_TARGET ? ' ✓' : ' ✗'}`,
      `${run.maxRssMiB.toFixed(0)} MiB`,
    ]);
  }
  markdownTable(
    ['target (by MACs)', 'ranks', 'original %', 'filter %', 'data %', 'data + fine-tuning %', 'epoch kept', 'fine-tuning time', 'whole run', 'peak RSS'],
    rows,
  );
}
