/**
 * What `--threads` buys on this machine: the demo's data reconstruction (charcnn conv2=21,conv3=52,
 * Scheme 2, 1,000 fitting images) and the whole-model bench at batch 32, with 1 thread and with
 * every core, runs of the two settings interleaved so that both see the same background load. The
 * load averages before and after are printed: on a shared machine they decide what threads can give.
 * Each fit is split into its phases (summed over the layers) from its progress lines.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_THREADS } from '../src/runtime/backend.js';
import { ROOT, WORK, heading, markdownTable, timeCli } from './common.js';

const FIXTURE = path.join(ROOT, 'fixtures', 'charcnn', 'model.json');
const TRAIN = path.join(ROOT, 'fixtures', 'fashion', 'train');
const TEST = path.join(ROOT, 'fixtures', 'fashion', 'test');
const ROUNDS = 3;
/** Issue targets: fit time with every core, and its speedup over one thread. */
const TARGET_FIT_S = 10;
const TARGET_SPEEDUP = 1.7;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const load = () => os.loadavg().map((x) => x.toFixed(1)).join(' / ');

/** Seconds of each fit phase, summed over the layers, from the progress lines ("conv2: fitting: 300/300 iterations in 5.8 s"). */
function phases(stderr: string): { collect: number; adam: number; passes: number } {
  const sum = (phase: string) =>
    [...stderr.matchAll(new RegExp(`: ${phase}: \\d+/\\d+ \\w+ in ([\\d.]+) s`, 'g'))].reduce((s, m) => s + Number(m[1]), 0);
  return { collect: sum('collecting'), adam: sum('fitting'), passes: sum('solving') + sum('checking') };
}

export async function runThreadsBench(): Promise<void> {
  const settings = [...new Set([1, DEFAULT_THREADS])];
  heading(`--threads: demo data reconstruction and bench at batch 32, ${settings.join(' vs ')} threads, interleaved (wasm, ${os.cpus().length} cores)`);
  const loadBefore = load();
  const fit = new Map<number, number[]>(settings.map((t) => [t, []]));
  const evaluate = new Map<number, number[]>(settings.map((t) => [t, []]));
  const split = new Map<number, ReturnType<typeof phases>[]>(settings.map((t) => [t, []]));
  const cost = new Map<number, { cpu: number[]; rss: number[] }>(settings.map((t) => [t, { cpu: [], rss: [] }]));
  const weights = new Map<number, Buffer>();
  const bench = new Map<number, { before: number[]; after: number[]; speedup: number[] }>(settings.map((t) => [t, { before: [], after: [], speedup: [] }]));
  const demoOut = (t: number) => path.join(WORK, `threads-demo-${t}`);
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate which setting goes first, so neither always runs on a warmer or quieter machine.
    for (const t of round % 2 ? [...settings].reverse() : settings) {
      const r = timeCli([
        '--backend', 'wasm', '--threads', String(t), 'compress', FIXTURE, '--scheme', '2', '--rank', 'conv2=21,conv3=52',
        '--data', TRAIN, '--eval-data', TEST, '--out', demoOut(t), '--force', '--json',
      ]);
      const seconds = JSON.parse(r.stdout).dataReconstruction.seconds;
      fit.get(t)!.push(seconds.fit);
      evaluate.get(t)!.push(seconds.evaluate);
      split.get(t)!.push(phases(r.stderr));
      cost.get(t)!.cpu.push(r.cpuMs / 1000);
      cost.get(t)!.rss.push(r.maxRssMiB);
      const bin = fs.readFileSync(path.join(demoOut(t), 'group1-shard1of1.bin'));
      if (weights.has(t) && !weights.get(t)!.equals(bin)) throw new Error(`--threads ${t}: two runs gave different weights`);
      weights.set(t, bin);
    }
    for (const t of round % 2 ? [...settings].reverse() : settings) {
      const r = JSON.parse(timeCli(['--backend', 'wasm', '--threads', String(t), 'bench', FIXTURE, demoOut(1), '--batch', '32', '--runs', '20', '--json']).stdout);
      const b = r.batches[0];
      const m = bench.get(t)!;
      m.before.push(b.before.medianMs);
      m.after.push(b.after.medianMs);
      m.speedup.push(b.speedup);
    }
  }
  const identical = settings.every((t) => weights.get(t)!.equals(weights.get(1)!));
  const base = median(fit.get(1)!);
  markdownTable(
    [
      'threads', 'fit (median)', 'fit runs', 'speedup vs 1 thread', 'collect / Adam / solve+check', 'held-out evaluation', 'process CPU', 'peak RSS',
      'bench b=32 before / after ms', 'bench b=32 speedup',
    ],
    settings.map((t) => {
      const f = median(fit.get(t)!);
      const ratio = base / f;
      const m = bench.get(t)!;
      return [
        t,
        `${f.toFixed(1)} s${t > 1 ? (f <= TARGET_FIT_S ? ' ✓' : ` ✗ (≤ ${TARGET_FIT_S} s)`) : ''}`,
        fit.get(t)!.map((x) => x.toFixed(1)).join(', '),
        t > 1 ? `${ratio.toFixed(2)}×${ratio >= TARGET_SPEEDUP ? ' ✓' : ` ✗ (≥ ${TARGET_SPEEDUP}×)`}` : '—',
        (['collect', 'adam', 'passes'] as const).map((k) => median(split.get(t)!.map((s) => s[k])).toFixed(1)).join(' / ') + ' s',
        `${median(evaluate.get(t)!).toFixed(1)} s`,
        `${median(cost.get(t)!.cpu).toFixed(1)} s`,
        `${Math.max(...cost.get(t)!.rss).toFixed(0)} MiB`,
        `${median(m.before).toFixed(2)} / ${median(m.after).toFixed(2)}`,
        `${median(m.speedup).toFixed(2)}×`,
      ];
    }),
  );
  process.stdout.write(
    `\nweights identical across thread counts: ${identical ? 'yes' : 'NO'} · load average (1/5/15 min) before ${loadBefore}, after ${load()}\n`,
  );
}
