import type { Command } from 'commander';
import chalk from 'chalk';
import * as path from 'node:path';
import { checkComparable, compareOnImages, compareOnRandom, timeLayers, timeModels, type Agreement, type BatchTiming, type BlockTiming } from '../bench.js';
import { listImages, skippedNote, type BatchStats } from '../data/images.js';
import { loadModel, type LoadedModel } from '../model/io.js';
import { listLayers } from '../model/layers.js';
import { readReplacementRecords } from '../compress.js';
import { modelMacs } from '../cost.js';
import { formatBytes, formatCount, formatPercent, formatRatio, renderTable } from '../report/format.js';
import { addImageOptions, addTimingOptions, intFlag, note, startBackend, type ImageFlags } from './common.js';
import { imageSetup } from './images.js';

interface BenchFlags extends ImageFlags {
  data?: string;
  batch: string;
  runs: string;
  warmup: string;
  perLayer?: boolean;
  json?: boolean;
}

export function registerBench(program: Command): void {
  const command = program
    .command('bench')
    .description('measure two models side by side: latency, speedup, agreement and accuracy on one backend')
    .argument('<before>', 'the original model (model.json or its folder)')
    .argument('<after>', 'the compressed model (model.json or its folder)')
    .option('--data <dir>', 'images to check accuracy and agreement on (one subfolder per class)')
    .option('--batch <sizes>', 'comma-separated batch sizes to time', '1,32')
    .option('--per-layer', "time each conv layer and its replacement on its real input shape")
    .option('--json', 'print the report as JSON on stdout');
  addImageOptions(addTimingOptions(command)).action(async (beforePath: string, afterPath: string, flags: BenchFlags, cmd: Command) => {
    const backend = await startBackend(cmd);
    const batches = flags.batch.split(',').map((s) => intFlag(s.trim(), '--batch'));
    const runs = intFlag(flags.runs, '--runs');
    const warmup = intFlag(flags.warmup, '--warmup', 0);
    const setup = flags.data ? imageSetup(cmd, flags, beforePath) : null;
    const images = flags.data && setup ? listImages(flags.data, setup.labels) : null;
    const a = await loadModel(beforePath);
    const b = await loadModel(afterPath);
    checkComparable(a.model, b.model);

    note('lowrank: checking agreement and accuracy');
    const stats: BatchStats = { skipped: [], decoded: 0 };
    const agreement = images && setup ? await compareOnImages(a.model, b.model, images.entries, setup.pixels, 64, stats) : compareOnRandom(a.model, b.model);
    const skipped = skippedNote(stats);
    if (skipped) note(`lowrank: ${skipped}`);
    note(`lowrank: timing batches ${batches.join(', ')} (${warmup} warm-up + ${runs} runs each, interleaved)`);
    const timings = await timeModels(a.model, b.model, batches, runs, warmup);
    let perLayer: BlockTiming[] | undefined;
    if (flags.perLayer) {
      const largest = timings[timings.length - 1];
      note(`lowrank: timing conv layers at batch ${largest.batch}`);
      const replaced = readReplacementRecords(b.userDefinedMetadata);
      perLayer = await timeLayers(a.model, b.model, largest.batch, runs, warmup, { before: largest.before.medianMs, after: largest.after.medianMs }, replaced);
    }
    const report = benchReport(backend, a, b, timings, agreement, perLayer);
    if (flags.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else process.stdout.write(`${renderBench(report)}\n`);
  });
}

function side(m: LoadedModel, accuracy: number | null) {
  return {
    path: path.relative(process.cwd(), m.jsonPath),
    macs: modelMacs(listLayers(m.model)).total,
    params: m.model.countParams(),
    bytes: m.weightBytes,
    ...(accuracy !== null ? { accuracy } : {}),
  };
}

export function benchReport(backend: string, a: LoadedModel, b: LoadedModel, batches: BatchTiming[], g: Agreement, perLayer?: BlockTiming[]) {
  const before = side(a, g.accuracyBefore);
  const after = side(b, g.accuracyAfter);
  return {
    backend,
    before,
    after,
    theoreticalSpeedup: before.macs / after.macs,
    batches,
    agreement: g.agreement,
    maxAbsDiff: g.maxAbsDiff,
    meanAbsDiff: g.meanAbsDiff,
    examples: g.examples,
    randomInputs: g.randomInputs,
    ...(g.accuracyBefore !== null && g.accuracyAfter !== null ? { accuracyDelta: g.accuracyAfter - g.accuracyBefore } : {}),
    ...(perLayer ? { perLayer } : {}),
  };
}

type BenchReport = ReturnType<typeof benchReport>;

export function renderBench(r: BenchReport): string {
  const ms = (x: number) => `${x.toFixed(2)} ms`;
  const speed = r.batches.map((t) => [
    String(t.batch),
    `${ms(t.before.medianMs)} (${ms(t.before.p10Ms)}–${ms(t.before.p90Ms)})`,
    `${ms(t.after.medianMs)} (${ms(t.after.p10Ms)}–${ms(t.after.p90Ms)})`,
    `${t.before.imagesPerSec.toFixed(0)} → ${t.after.imagesPerSec.toFixed(0)}`,
    chalk.bold(formatRatio(t.speedup)),
    formatPercent(t.speedup / r.theoreticalSpeedup, 0),
  ]);
  const parts = [
    `${chalk.bold('before')} ${r.before.path}: ${formatCount(r.before.macs)} MACs, ${formatCount(r.before.params)} params, ${formatBytes(r.before.bytes)}`,
    `${chalk.bold('after')}  ${r.after.path}: ${formatCount(r.after.macs)} MACs, ${formatCount(r.after.params)} params, ${formatBytes(r.after.bytes)}`,
    `theoretical speedup (MACs): ${chalk.bold(formatRatio(r.theoreticalSpeedup))} · backend ${r.backend}`,
    '',
    renderTable(
      [
        { header: 'batch', align: 'right' }, { header: 'before: median (p10–p90)' }, { header: 'after: median (p10–p90)' },
        { header: 'images/s' }, { header: 'speedup', align: 'right' }, { header: 'of theoretical', align: 'right' },
      ],
      speed,
    ),
    chalk.dim('speedup = median of paired before/after ratios; "of theoretical" = measured / theoretical speedup: how much of the MAC saving this backend turns into time'),
    '',
  ];
  const on = r.randomInputs ? `${r.examples} fixed-seed random inputs (no --data)` : `${r.examples} images`;
  parts.push(`agreement on ${on}: top-1 ${chalk.bold(formatPercent(r.agreement, 1))}, max |Δ| ${r.maxAbsDiff.toExponential(2)}, mean |Δ| ${r.meanAbsDiff.toExponential(2)}`);
  if (r.accuracyDelta !== undefined) {
    const d = r.accuracyDelta * 100;
    const delta = `${d >= 0 ? '+' : ''}${d.toFixed(2)} points`;
    parts.push(`top-1 accuracy: ${formatPercent(r.before.accuracy!, 2)} → ${formatPercent(r.after.accuracy!, 2)} (${d < -1 ? chalk.red(delta) : chalk.green(delta)})`);
  }
  if (r.perLayer) {
    parts.push(
      '',
      renderTable(
        [
          { header: 'layer' }, { header: 'before', align: 'right' }, { header: 'time', align: 'right' }, { header: 'MACs', align: 'right' },
          { header: 'after', align: 'right' }, { header: 'time', align: 'right' }, { header: 'MACs', align: 'right' },
          { header: 'speedup', align: 'right' }, { header: 'replaced by' },
        ],
        r.perLayer.map((l) => [
          l.name, ms(l.beforeMs), formatPercent(l.beforeTimeShare), formatPercent(l.beforeMacShare),
          l.afterMs === null ? '' : ms(l.afterMs), formatPercent(l.afterTimeShare), formatPercent(l.afterMacShare),
          l.speedup === null ? '' : chalk.bold(formatRatio(l.speedup)), l.afterLayers.join(', '),
        ]),
      ),
      chalk.dim('per layer: median time of the layer (before) and of its replacement block (after) on its real input shape, with its share of the whole model\'s time and MACs'),
    );
  }
  return parts.join('\n');
}
