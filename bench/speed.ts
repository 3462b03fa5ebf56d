/**
 * Measured speed on the bundled fixture: the charcnn against its conv2+conv3 compressions at the
 * ranks giving ≥ 4.5× theoretical speedup, per scheme variant; then per-layer times inside the model
 * runs of the demo's compression, checked to add up to the model time, and the fixed overhead at batch 1.
 */
import * as path from 'node:path';
import { useBackend } from '../src/runtime/backend.js';
import { loadModel } from '../src/model/io.js';
import { listLayers } from '../src/model/layers.js';
import { filterCandidates, formatRanks, ranksForSpeedup } from '../src/plan/ranks.js';
import { schemeFor, type SchemeOptions } from '../src/schemes/index.js';
import { ROOT, WORK, heading, markdownTable, timeCli } from './common.js';

const FIXTURE = path.join(ROOT, 'fixtures', 'charcnn', 'model.json');
const TEST_IMAGES = path.join(ROOT, 'fixtures', 'fashion', 'test');

const VARIANTS: { title: string; flags: string[]; options: SchemeOptions }[] = [
  { title: 'scheme 2', flags: ['--scheme', '2'], options: { scheme: '2', basis: 'per-channel', separable: false } },
  { title: 'scheme 1 (per-channel)', flags: ['--scheme', '1'], options: { scheme: '1', basis: 'per-channel', separable: false } },
  { title: 'scheme 1 (separable)', flags: ['--scheme', '1', '--separable'], options: { scheme: '1', basis: 'per-channel', separable: true } },
];

export async function runSpeedBench(target = 4.5): Promise<void> {
  await useBackend('wasm');
  const fixture = await loadModel(FIXTURE);
  const layers = listLayers(fixture.model);
  heading(`Measured speed: charcnn vs conv2+conv3 compressed to ≥ ${target}× theoretical (wasm, filter reconstruction)`);
  const rows: (string | number)[][] = [];
  for (const v of VARIANTS) {
    const choice = ranksForSpeedup(layers, filterCandidates(['conv2', 'conv3'].map((n) => layers.find((l) => l.name === n)!), () => schemeFor(v.options), fixture.topology), target);
    if (!choice) {
      rows.push([v.title, '—', `cannot reach ${target}×`, '', '', '', '', '']);
      continue;
    }
    const out = path.join(WORK, `charcnn-${v.title.replace(/\W+/g, '-')}`);
    timeCli(['--backend', 'wasm', 'compress', FIXTURE, ...v.flags, '--rank', formatRanks(choice.ranks), '--out', out, '--force']);
    const bench = JSON.parse(timeCli(['--backend', 'wasm', 'bench', FIXTURE, out, '--data', TEST_IMAGES, '--batch', '1,32', '--runs', '30', '--json']).stdout);
    const b32 = bench.batches.find((b: any) => b.batch === 32);
    const b1 = bench.batches.find((b: any) => b.batch === 1);
    rows.push([
      v.title, formatRanks(choice.ranks), `${bench.theoreticalSpeedup.toFixed(2)}×`, speedupCell(b1), speedupCell(b32),
      `${((100 * b32.speedup) / bench.theoreticalSpeedup).toFixed(0)} %`,
      `${(100 * bench.before.accuracy).toFixed(1)} → ${(100 * bench.after.accuracy).toFixed(1)}`,
      `${(100 * bench.agreement).toFixed(1)} %`,
    ]);
  }
  markdownTable(['variant', 'ranks', 'theoretical', 'measured b=1 [95% interval]', 'measured b=32 [95% interval]', 'b=32 / theoretical', 'top-1 % (filter only)', 'agreement'], rows);
  await runPerLayerBench();
}

/** "6.77× [6.60–6.90×]", with the verdict when it is not a clear speedup. */
function speedupCell(r: any): string {
  const verdict = r.verdict === 'faster' ? '' : ` (${r.verdict})`;
  return `${r.speedup.toFixed(2)}×${verdict} [${r.speedupLow.toFixed(2)}–${r.speedupHigh.toFixed(2)}×]`;
}

const pct = (x: number) => `${(100 * x).toFixed(1)} %`;

/** Issue target: per-layer times plus "other" within 10 % of the measured model time, before and after. */
const SUM_TARGET = 0.1;

/** The demo's compression (scheme 2, conv2=21, conv3=52): per-layer tables at batch 32 and 1, and a self-bench at --runs 3. */
async function runPerLayerBench(): Promise<void> {
  const out = path.join(WORK, 'charcnn-demo-ranks');
  timeCli(['--backend', 'wasm', 'compress', FIXTURE, '--scheme', '2', '--rank', 'conv2=21,conv3=52', '--out', out, '--force']);
  for (const batch of [32, 1]) {
    const bench = JSON.parse(timeCli(['--backend', 'wasm', 'bench', FIXTURE, out, '--batch', String(batch), '--runs', '30', '--per-layer', '--json']).stdout);
    const p = bench.perLayer;
    heading(`Per-layer times inside the model runs, charcnn vs scheme 2 conv2=21,conv3=52, batch ${batch} (wasm, ${p.runs} runs)`);
    markdownTable(
      ['layer', 'before ms', 'share of time', 'share of MACs', 'after ms', 'share of time', 'share of MACs', 'speedup [95% interval]'],
      [
        ...p.blocks.map((l: any) => [
          l.name, l.beforeMs.toFixed(2), pct(l.beforeTimeShare), pct(l.beforeMacShare),
          l.afterMs.toFixed(2), pct(l.afterTimeShare), pct(l.afterMacShare), speedupCell(l),
        ]),
        ['other', p.other.beforeMs.toFixed(2), pct(p.other.beforeMs / p.beforeMs), '', p.other.afterMs.toFixed(2), pct(p.other.afterMs / p.afterMs), '', speedupCell(p.other)],
      ],
    );
    const check = (sum: number, model: number) => `${sum.toFixed(2)} ms vs ${model.toFixed(2)} ms (${pct(sum / model - 1)}) ${Math.abs(sum / model - 1) <= SUM_TARGET ? '✓' : '✗'}`;
    process.stdout.write(
      `\nrows + other vs the model time of the speed table (target within ${pct(SUM_TARGET)}): before ${check(p.beforeMs, p.modelBeforeMs)}, after ${check(p.afterMs, p.modelAfterMs)}\n`,
    );
    const o = bench.overheadAtBatch1;
    if (o) {
      const line = (x: any) => `${x.fixedMs.toFixed(2)} ms of ${x.modelMs.toFixed(2)} ms (${x.layers} layers; outside the layers ${x.outsideMs.toFixed(3)} ms, cheapest layer ${x.cheapestLayerMs.toFixed(3)} ms)`;
      process.stdout.write(`fixed overhead at batch 1: before ${line(o.before)}; after ${line(o.after)}\n`);
    }
  }
  const self = JSON.parse(timeCli(['--backend', 'wasm', 'bench', FIXTURE, FIXTURE, '--batch', '1,32', '--runs', '3', '--json']).stdout);
  process.stdout.write(`\nfixture against itself, --runs 3: ${self.batches.map((b: any) => `batch ${b.batch}: ${speedupCell(b)} in ${b.runs} runs`).join('; ')}\n`);
}
