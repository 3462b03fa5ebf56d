/**
 * `lowrank sweep` on the bundled fixture: the default six targets, fitted on fashion/train (1,000)
 * and checked on fashion/test (1,000), from scratch in a fresh CLI process on wasm. Reports every
 * point and where the run's time goes; the chart is left in .bench-tmp/sweep/sweep.png.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SweepFile } from '../src/commands/sweep.js';
import { ROOT, WORK, heading, markdownTable, timeCli } from './common.js';

const FIXTURE = path.join(ROOT, 'fixtures', 'charcnn', 'model.json');
const TRAIN = path.join(ROOT, 'fixtures', 'fashion', 'train');
const TEST = path.join(ROOT, 'fixtures', 'fashion', 'test');
const TARGET_SECONDS = 300;

const pct = (x: number) => (100 * x).toFixed(1);
const x2 = (x: number) => `${x.toFixed(2)}×`;
const s1 = (x: number) => `${x.toFixed(1)} s`;

export async function runSweepBench(): Promise<void> {
  const out = path.join(WORK, 'sweep');
  fs.rmSync(out, { recursive: true, force: true });
  heading('sweep: charcnn, 6 targets, fit on fashion/train (1,000), held out fashion/test (1,000), wasm, from scratch');
  const run = timeCli(['--backend', 'wasm', 'sweep', FIXTURE, '--data', TRAIN, '--eval-data', TEST, '--out', out]);
  const sweep: SweepFile = JSON.parse(fs.readFileSync(path.join(out, 'sweep.json'), 'utf8'));
  const at = (p: SweepFile['points'][number], batch: number) => p.measured.find((m) => m.batch === batch)!.speedup;
  markdownTable(
    ['target', 'ranks', 'theoretical', 'measured b=1', 'measured b=32', 'top-1 % filter → data', 'agreement % filter → data', 'fit', 'evaluate', 'timing', 'point'],
    sweep.points.map((p) => [
      `${p.target}×`, Object.entries(p.ranks).map(([n, r]) => `${n}=${r}`).join(', '), x2(p.theoreticalSpeedup), x2(at(p, 1)), x2(at(p, 32)),
      `${pct(p.accuracy!.filter)} → ${pct(p.accuracy!.data)}`, `${pct(p.agreement.filter)} → ${pct(p.agreement.data)}`,
      s1(p.seconds.fit), s1(p.seconds.evaluate), s1(p.seconds.timing), s1(p.seconds.point),
    ]),
  );
  const wall = run.wallMs / 1000;
  const points = sweep.points.reduce((s, p) => s + p.seconds.point, 0);
  process.stdout.write(`\noriginal top-1 ${pct(sweep.points[0].accuracy!.original)} %. `
    + `Whole run ${s1(wall)} wall (target < ${TARGET_SECONDS} s${wall < TARGET_SECONDS ? ' ✓' : ' ✗'}), ${s1(run.cpuMs / 1000)} CPU, peak RSS ${run.maxRssMiB.toFixed(0)} MiB: `
    + `sensitivity ${s1(sweep.sensitivity.seconds)}, points ${s1(points)} (fit ${s1(sweep.points.reduce((s, p) => s + p.seconds.fit, 0))}), `
    + `the rest (start-up, loading, decoding ${sweep.images.fit + sweep.images.holdout} images, chart) ${s1(wall - sweep.sensitivity.seconds - points)}.\n`);
}
