/**
 * Rank selection for a target (`compress --speedup X --data`) against the equal-fraction baseline
 * (every layer the same fraction of its full rank, capped at break-even), both followed by the same
 * joint data reconstruction: the charcnn's conv2+conv3, Scheme 2, fitted on fixtures/fashion/train
 * (1,000) and scored on fixtures/fashion/test (1,000), at 4×, 8× and 12× theoretical, on one
 * thread; beside it, the rank search's time (from its progress line) against the fit's.
 * Issue target: --speedup loses no more top-1 than equal fractions, and strictly less at 12×.
 */
import * as path from 'node:path';
import { useBackend } from '../src/runtime/backend.js';
import { loadModel } from '../src/model/io.js';
import { listLayers } from '../src/model/layers.js';
import { filterCandidates, formatRanks, ranksForSpeedup } from '../src/plan/ranks.js';
import { scheme2 } from '../src/schemes/index.js';
import { ROOT, WORK, heading, markdownTable, timeCli } from './common.js';

const FIXTURE = path.join(ROOT, 'fixtures', 'charcnn', 'model.json');
const TRAIN = path.join(ROOT, 'fixtures', 'fashion', 'train');
const TEST = path.join(ROOT, 'fixtures', 'fashion', 'test');
const TARGETS = [4, 8, 12];

const pct = (x: number) => (100 * x).toFixed(1);

export async function runAllocationBench(): Promise<void> {
  await useBackend('wasm');
  const fixture = await loadModel(FIXTURE);
  const layers = listLayers(fixture.model);
  const candidates = filterCandidates(['conv2', 'conv3'].map((n) => layers.find((l) => l.name === n)!), () => scheme2, fixture.topology);
  heading('Rank selection: --speedup X --data vs equal fractions, both with joint data reconstruction (charcnn conv2+conv3, scheme 2, wasm, 1 thread)');
  const rows: (string | number)[][] = [];
  for (const target of TARGETS) {
    const equal = ranksForSpeedup(layers, candidates, target)!;
    const run = (name: string, rankFlags: string[]) => {
      const out = path.join(WORK, `allocation-${target}-${name}`);
      const r = timeCli(['--backend', 'wasm', '--threads', '1', 'compress', FIXTURE, '--scheme', '2', '--layers', 'conv2,conv3', ...rankFlags,
        '--out', out, '--force', '--data', TRAIN, '--eval-data', TEST, '--json']);
      if (r.code !== 0) throw new Error(`compress failed: ${r.stderr}`);
      const search = /choosing ranks by joint fits: .* in ([\d.]+) s/.exec(r.stderr);
      return { report: JSON.parse(r.stdout), wall: r.wallMs / 1000, search: search ? Number(search[1]) : null };
    };
    const base = run('equal', ['--rank', formatRanks(equal.ranks)]);
    const chosen = run('speedup', ['--speedup', String(target)]);
    const ranksOf = (r: any) => r.layers.map((l: any) => `${l.name}=${l.rank}`).join(', ');
    rows.push([
      `${target}×`,
      `${ranksOf(base.report)} (${base.report.theoreticalSpeedup.toFixed(2)}×)`,
      pct(base.report.accuracy.data),
      `${ranksOf(chosen.report)} (${chosen.report.theoreticalSpeedup.toFixed(2)}×)`,
      pct(chosen.report.accuracy.data),
      pct(chosen.report.accuracy.original),
      `${(100 * (chosen.report.accuracy.data - base.report.accuracy.data)).toFixed(1)}`,
      `${chosen.search?.toFixed(0)} / ${chosen.report.dataReconstruction.seconds.fit.toFixed(0)}`,
      `${base.wall.toFixed(0)} / ${chosen.wall.toFixed(0)}`,
    ]);
  }
  markdownTable(['target', 'equal fractions (reached)', 'top-1 %', '--speedup ranks (reached)', 'top-1 %', 'original %', '--speedup − equal (points)', 'rank search / fit s', 'wall s (equal / --speedup)'], rows);
}
