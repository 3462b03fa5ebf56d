/**
 * Data reconstruction on the bundled fixture: the charcnn's conv2+conv3 replaced by Scheme 2 at the
 * ranks giving 2.5×, 4.5×, 6× and 8× theoretical whole-model speedup (each layer the same fraction
 * of its full rank), fitted on fixtures/fashion/train and checked on fixtures/fashion/test: top-1
 * accuracy of the original, filter-only, non-joint and joint models, and the wall time and peak
 * memory of the (joint) data reconstruction, each in a fresh CLI process on wasm.
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
const SPEEDUPS = [2.5, 4.5, 6, 8];
/** Accuracy loss allowed for the joint fit (points), per speedup. */
const TARGET_LOSS: Record<number, number> = { 2.5: 0.1, 4.5: 1, 8: 1 };

const pct = (x: number) => (100 * x).toFixed(1);

export async function runReconstructBench(): Promise<void> {
  await useBackend('wasm');
  const fixture = await loadModel(FIXTURE);
  const layers = listLayers(fixture.model);
  const scheme = schemeFor({ scheme: '2', basis: 'per-channel', separable: false });
  heading('Data reconstruction: charcnn conv2+conv3, Scheme 2, fit on fashion/train (1,000), top-1 on fashion/test (1,000), wasm');
  const rows: (string | number)[][] = [];
  for (const target of SPEEDUPS) {
    const choice = ranksForSpeedup(layers, filterCandidates(['conv2', 'conv3'].map((n) => layers.find((l) => l.name === n)!), () => scheme, fixture.topology), target);
    if (!choice) {
      rows.push([`${target}×`, `cannot reach ${target}×`, '', '', '', '', '', '', '', '']);
      continue;
    }
    const run = (joint: boolean) => {
      const out = path.join(WORK, `reconstruct-${target}-${joint ? 'joint' : 'nonjoint'}`);
      const r = timeCli([
        '--backend', 'wasm', 'compress', FIXTURE, '--scheme', '2', '--layers', 'conv2,conv3', '--rank', formatRanks(choice.ranks),
        '--out', out, '--force', '--data', TRAIN, '--eval-data', TEST, joint ? '--joint' : '--no-joint', '--json',
      ]);
      return { report: JSON.parse(r.stdout), run: r };
    };
    const nonJoint = run(false);
    const joint = run(true);
    const acc = joint.report.accuracy;
    const loss = 100 * (acc.original - acc.data);
    const allowed = TARGET_LOSS[target];
    const fit = joint.report.dataReconstruction.seconds.fit;
    const errors = (r: any) => r.layers.map((l: any) => `${l.name} ${pct(l.dataError.filter)}→${pct(l.dataError.data)}`).join(', ');
    rows.push([
      `${target}×`,
      formatRanks(choice.ranks),
      `${choice.theoreticalSpeedup.toFixed(2)}×`,
      pct(acc.original),
      pct(acc.filter),
      pct(nonJoint.report.accuracy.data),
      pct(acc.data),
      `${loss >= 0 ? '−' : '+'}${Math.abs(loss).toFixed(1)}${allowed !== undefined ? (loss <= allowed ? ' ✓' : ` ✗ (≤ ${allowed})`) : ''}`,
      `${fit.toFixed(1)} s${fit < 60 ? '' : ' ✗'}`,
      `${(joint.run.wallMs / 1000).toFixed(1)} s`,
      `${joint.run.maxRssMiB.toFixed(0)} MiB${joint.run.maxRssMiB < 1024 ? '' : ' ✗'}`,
      `${errors(joint.report)} (non-joint ${errors(nonJoint.report)})`,
    ]);
  }
  markdownTable(
    [
      'speedup', 'ranks', 'theoretical', 'original %', 'filter %', 'non-joint %', 'joint %', 'joint loss (points)',
      'fit time (joint)', 'whole run', 'peak RSS', 'held-out output error % filter→data',
    ],
    rows,
  );
  process.stdout.write('\nfit time = data reconstruction of both layers (collecting, fitting, exact solve), without the held-out evaluation; whole run = the CLI process from start to exit (load, factorize, fit, evaluate, save).\n');
}
