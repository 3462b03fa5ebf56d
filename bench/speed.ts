/**
 * Measured speed on the bundled fixture: the charcnn against its conv2+conv3 compressions at the
 * ranks giving ≥ 4.5× theoretical speedup, per scheme variant, with per-layer timings.
 */
import * as path from 'node:path';
import { useBackend } from '../src/backend.js';
import { loadModel } from '../src/model/io.js';
import { listLayers } from '../src/model/layers.js';
import { filterCandidates, formatRanks, ranksForSpeedup } from '../src/ranks.js';
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
  let perLayer: any[] | null = null;
  for (const v of VARIANTS) {
    const choice = ranksForSpeedup(layers, filterCandidates(layers, ['conv2', 'conv3'], schemeFor(v.options), fixture.topology), target);
    if (!choice) {
      rows.push([v.title, '—', `cannot reach ${target}×`, '', '', '', '', '']);
      continue;
    }
    const out = path.join(WORK, `charcnn-${v.title.replace(/\W+/g, '-')}`);
    timeCli(['--backend', 'wasm', 'compress', FIXTURE, ...v.flags, '--rank', formatRanks(choice.ranks), '--out', out, '--force']);
    const bench = JSON.parse(timeCli(['--backend', 'wasm', 'bench', FIXTURE, out, '--data', TEST_IMAGES, '--batch', '1,32', '--runs', '30', '--per-layer', '--json']).stdout);
    const b32 = bench.batches.find((b: any) => b.batch === 32);
    const b1 = bench.batches.find((b: any) => b.batch === 1);
    rows.push([
      v.title, formatRanks(choice.ranks), `${bench.theoreticalSpeedup.toFixed(2)}×`, `${b1.speedup.toFixed(2)}×`, `${b32.speedup.toFixed(2)}×`,
      `${((100 * b32.speedup) / bench.theoreticalSpeedup).toFixed(0)} %`,
      `${(100 * bench.before.accuracy).toFixed(1)} → ${(100 * bench.after.accuracy).toFixed(1)}`,
      `${(100 * bench.agreement).toFixed(1)} %`,
    ]);
    if (v.options.scheme === '2') perLayer = bench.perLayer;
  }
  markdownTable(['variant', 'ranks', 'theoretical', 'measured b=1', 'measured b=32', 'b=32 / theoretical', 'top-1 % (filter only)', 'agreement'], rows);
  if (perLayer) {
    process.stdout.write('\nScheme 2, per layer at batch 32 (share of model time vs share of MACs):\n\n');
    markdownTable(
      ['layer', 'before ms', 'time', 'MACs', 'after ms', 'time', 'MACs', 'speedup'],
      perLayer.map((l) => [
        l.name, l.beforeMs.toFixed(2), `${(100 * l.beforeTimeShare).toFixed(1)} %`, `${(100 * l.beforeMacShare).toFixed(1)} %`,
        l.afterMs?.toFixed(2) ?? '', l.afterTimeShare === null ? '' : `${(100 * l.afterTimeShare).toFixed(1)} %`,
        l.afterMacShare === null ? '' : `${(100 * l.afterMacShare).toFixed(1)} %`, l.speedup ? `${l.speedup.toFixed(2)}×` : '',
      ]),
    );
  }
}
