import { Option, type Command } from 'commander';
import chalk from 'chalk';
import { UserError } from '../errors.js';
import { skippedNote } from '../data/images.js';
import { runCompress, type CompressReport, type MeasuredReport } from '../commands/compress.js';
import type { MaxLossReport } from '../plan/maxloss.js';
import { stderrReporter } from '../reconstruct/index.js';
import { DEFAULT_PROBES } from '../plan/maxloss.js';
import { DEFAULT_TIMING_BATCH, measuredReach } from '../plan/measured.js';
import { QUANTIZE_CHOICES, encodingOfFlag } from '../model/io.js';
import type { ReconstructOptions } from '../reconstruct/index.js';
import { formatBytes, formatCount, formatMs, formatPercent, formatRatio, renderTable } from '../report/format.js';
import { formatRanks } from '../plan/ranks.js';
import { DEFAULT_LABEL_WEIGHT, FINETUNE_LAYERS, type FinetuneOptions } from '../train/finetune.js';
import { AUGMENT_CHOICES, type AugmentChoice } from '../train/augment.js';
import { checkOutputName, commonestNote, note, startBackend } from './common.js';
import {
  addDataOptions, addSchemeOptions, reconstructOptions, schemeOptions, type DataFlags, type SchemeFlags,
} from './compress-options.js';
import { parseFlag, parseFlagOrAuto } from './flags.js';
import { checkFlagRules } from './rules.js';
import { parseRankSpec } from '../plan/manual.js';
import { skippedNotes } from '../plan/select.js';
import type { BatchTiming } from '../timing/loop.js';
import type { AllocationBasis } from '../plan/plan.js';

/** How each allocation basis is named where compress reports the ranks chosen for a target. */
const ALLOCATION_BASES: Record<AllocationBasis, string> = {
  spectrum: "the kernels' spectra: summed filter error",
  responses: "the layers' response spectra on the fitting images: summed response error",
  measured: 'joint fits: output divergence from the original on fitting images the fit did not see',
};

interface CompressFlags extends SchemeFlags {
  rank?: string;
  speedup?: string;
  measured?: boolean;
  timingBatch?: string;
  maxLoss?: string;
  probes?: string;
  out: string;
  force?: boolean;
  allowSlower?: boolean;
  quantize?: (typeof QUANTIZE_CHOICES)[number];
  json?: boolean;
}

interface FinetuneFlags {
  finetune?: boolean;
  epochs: string;
  finetuneLayers: 'factors' | 'all';
  labelWeight: string;
  augment: AugmentChoice;
}

/** The fine-tuning options, or null without --finetune (rules.ts refuses the other fine-tuning flags then). */
function finetuneOptions(flags: FinetuneFlags, data: ReconstructOptions | null): FinetuneOptions | null {
  if (!flags.finetune || !data) return null;
  return {
    epochs: parseFlagOrAuto('--epochs', flags.epochs),
    layers: flags.finetuneLayers,
    batch: data.batch,
    seed: data.seed,
    labelWeight: parseFlag('--label-weight', flags.labelWeight),
    augment: flags.augment,
  };
}

export function registerCompress(program: Command): void {
  const command = program
    .command('compress')
    .description('replace conv and Dense layers with low-rank factorizations and write a stock tfjs LayersModel')
    .argument('<model>', 'model.json, or a folder holding one')
    .option('--rank <rank>', 'rank for every chosen layer (e.g. 8), or per layer (conv2=8,conv3=12)')
    .option('--speedup <x>', 'choose the ranks: the whole model at least this many times fewer MACs, with the least predicted error')
    .option('--measured', 'with --speedup: the target is measured time on this backend (layers timed at a few ranks), checked by a bench at the end')
    .option('--timing-batch <n>', `with --measured: batch size the layers and the final bench are timed at (default ${DEFAULT_TIMING_BATCH})`)
    .option('--max-loss <points>', 'with --data: the largest speedup whose held-out loss of top-1 accuracy (or agreement with the original) is at most this many points')
    .option('--probes <n>', `with --max-loss: speedup targets to try, each a full compress and held-out check (default ${DEFAULT_PROBES})`)
    .requiredOption('--out <dir>', 'folder to write the compressed model into (must not exist unless --force)')
    .option('--force', 'replace an existing --out folder that lowrank wrote')
    .option('--allow-slower', 'replace layers even where the rank saves no MACs (warns for each)')
    .addOption(new Option('--quantize <kind>', 'precision of the new weights (default: that of most of the input\'s weights; the others keep their bytes)').choices(QUANTIZE_CHOICES))
    .option('--json', 'print the report as JSON on stdout')
    .option('--finetune', 'after data reconstruction, train the compressed model end to end to reproduce the original (distillation)')
    .option('--epochs <n>', 'fine-tuning epochs; auto: sized to the number of images, stopping when the loss on a validation tenth of the fitting images stops improving', 'auto')
    .addOption(new Option('--finetune-layers <which>', 'fine-tune the new factor layers only, or every layer').choices([...FINETUNE_LAYERS]).default('factors'))
    .option('--label-weight <w>', 'fine-tuning: weight of the cross-entropy on the class-folder labels beside distillation (0: distillation only)', String(DEFAULT_LABEL_WEIGHT))
    .addOption(new Option('--augment <when>', 'fine-tuning: random shifts and horizontal flips of the fitting images (auto: for colour inputs and fewer than 2,000 images, not for grayscale digits or text)').choices([...AUGMENT_CHOICES]).default('auto'));
  addDataOptions(addSchemeOptions(command), 'fit the replaced layers to these images (data reconstruction); one subfolder per class for accuracy')
    .action(async (modelPath: string, flags: CompressFlags & DataFlags & FinetuneFlags, cmd: Command) => {
      const warnings = checkFlagRules(cmd, modelPath);
      const backend = await startBackend(cmd);
      for (const w of warnings) note(chalk.yellow(`lowrank: warning: ${w}`));
      checkOutputName(flags.out);
      const data = reconstructOptions(flags, cmd, modelPath);
      const report = await runCompress(
        {
          input: modelPath,
          out: flags.out,
          force: flags.force ?? false,
          ...schemeOptions(flags),
          rank: flags.rank === undefined ? undefined : parseRankSpec(flags.rank),
          speedup: flags.speedup === undefined ? undefined : parseFlag('--speedup', flags.speedup),
          measured: flags.measured ?? false,
          timingBatch: flags.timingBatch === undefined ? undefined : parseFlag('--timing-batch', flags.timingBatch),
          maxLoss: flags.maxLoss === undefined ? undefined : parseFlag('--max-loss', flags.maxLoss),
          probes: flags.probes === undefined ? undefined : parseFlag('--probes', flags.probes),
          allowSlower: flags.allowSlower ?? false,
          data,
          finetune: finetuneOptions(flags, data),
          quantize: flags.quantize === undefined ? undefined : encodingOfFlag(flags.quantize),
        },
        (message) => note(message.startsWith('warning: ') ? chalk.yellow(`lowrank: ${message}`) : `lowrank: ${message}`),
        stderrReporter(),
      );
      const shortfall = report.measured && measuredShortfall(report.measured);
      if (shortfall) note(chalk.yellow(`lowrank: warning: ${shortfall}`));
      const skipped = report.data ? skippedNote({ skipped: report.data.skippedFiles, decoded: 0 }) : null;
      if (skipped) note(chalk.yellow(`lowrank: warning: ${skipped}`));
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(compressJson(backend, report), null, 2)}\n`);
      } else {
        process.stdout.write(`${renderCompress(report)}\n`);
        process.stdout.write(`files (weights + model.json) ${formatBytes(report.fileBytes.before)} → ${formatBytes(report.fileBytes.after)}; new weights ${report.newWeights}\n`);
        note(`lowrank: wrote ${report.output} (${report.saved.shards} weight shard${report.saved.shards > 1 ? 's' : ''})`);
      }
    });
}

/**
 * With --measured: a warning when the closing bench measured less than the target, saying by how
 * much at the median and whether even the top of its 95% interval falls short; null when it reached it.
 */
export function measuredShortfall(m: { target: number; bench: Pick<BatchTiming, 'batch' | 'speedup' | 'speedupLow' | 'speedupHigh'> }): string | null {
  const b = m.bench;
  if (b.speedup >= m.target) return null;
  const measured = `the closing bench at batch ${b.batch} measured ${formatRatio(b.speedup)} [${b.speedupLow.toFixed(2)}–${formatRatio(b.speedupHigh)}]`;
  const short = `${(m.target - b.speedup).toFixed(2)}× (${formatPercent(1 - b.speedup / m.target, 1)}) short of the ${m.target}× target at the median`;
  const interval = b.speedupHigh < m.target
    ? `and ${(m.target - b.speedupHigh).toFixed(2)}× short even at the top of its 95% interval`
    : 'though its 95% interval reaches the target';
  return `${measured}: ${short}, ${interval}; the layer timings promised more than the whole model delivers: ask for a higher --speedup, or time at the batch you deploy with (--timing-batch)`;
}

export function compressJson(backend: string, r: CompressReport) {
  const data = r.data;
  const fitted = new Map(data?.layers.map((l) => [l.name, l]));
  return {
    backend,
    input: r.input,
    output: r.output,
    scheme: r.scheme.id,
    totalMacsBefore: r.totalMacsBefore,
    totalMacsAfter: r.totalMacsAfter,
    theoreticalSpeedup: r.theoreticalSpeedup,
    ...(r.allocation ? { rankSelection: r.allocation } : {}),
    layers: r.layers.map((l) => {
      const d = fitted.get(l.name);
      return d ? { ...l, dataError: d.dataError, fitError: d.fitError, fitSteps: d.steps, kept: d.kept } : l;
    }),
    skipped: r.skipped,
    fileBytes: r.fileBytes,
    newWeights: r.newWeights,
    ...(data?.accuracy ? {
      accuracy: {
        original: data.accuracy.original, filter: data.accuracy.filter, data: data.accuracy.data,
        ...(r.finetune?.accuracy != null ? { finetuned: r.finetune.accuracy } : {}),
      },
    } : {}),
    ...(data ? {
      dataReconstruction: {
        joint: data.joint,
        images: data.images,
        labeled: data.accuracy?.labeled ?? 0,
        agreement: data.agreement,
        iterations: data.iterations,
        batch: data.batch,
        seed: data.seed,
        seconds: data.seconds,
      },
    } : {}),
    ...(r.finetune ? { finetune: r.finetune } : {}),
    ...(r.measured ? { measured: measuredJson(r.measured) } : {}),
    ...(r.maxLoss ? { maxLoss: r.maxLoss } : {}),
    ...(r.quickTiming ? { quickTiming: { batch: r.quickTiming.batch, runs: r.quickTiming.runs, speedup: r.quickTiming.speedup, speedupLow: r.quickTiming.speedupLow, speedupHigh: r.quickTiming.speedupHigh } } : {}),
    ...(r.warnings.length || r.heldOutWarning ? { warnings: [...r.warnings, ...(r.heldOutWarning ? [r.heldOutWarning] : [])] } : {}),
  };
}

function measuredJson(m: MeasuredReport) {
  const { table, bench } = m;
  return {
    target: m.target,
    batch: table.batch,
    backend: table.backend,
    runs: table.runs,
    timingSeconds: table.seconds,
    beforeMs: table.beforeMs,
    restMs: table.restMs,
    untouched: table.untouched,
    layers: table.layers.map((l) => ({ ...l, rank: m.ranks[l.name] || null })),
    maximum: measuredReach(table).maximum,
    predicted: { afterMs: m.predictedMs, speedup: m.predictedSpeedup, error: m.predictedError },
    bench: {
      batch: bench.batch, runs: bench.runs, beforeMs: bench.before.medianMs, afterMs: bench.after.medianMs,
      speedup: bench.speedup, speedupLow: bench.speedupLow, speedupHigh: bench.speedupHigh, verdict: bench.verdict,
    },
  };
}


function renderMeasured(m: MeasuredReport): string[] {
  const { table, bench } = m;
  const untouched = table.untouched.map((u) => `${u.name} ${formatMs(u.ms)}`).join(', ');
  const rows = table.layers.map((l) => [
    l.name, formatMs(l.originalMs), l.points.map((p) => `${p.rank}: ${formatMs(p.ms)}`).join(' · '), m.ranks[l.name] ? String(m.ranks[l.name]) : 'left as it is',
  ]);
  const timed = renderTable([{ header: 'layer' }, { header: 'original', align: 'right' }, { header: 'replacement at rank: time' }, { header: 'chosen', align: 'right' }], rows);
  return [
    `time at batch ${table.batch} on ${table.backend} (${table.runs} rounds, ${table.seconds.toFixed(1)} s): original model ${formatMs(table.beforeMs)}, outside the replaced layers ${formatMs(table.restMs)}${untouched ? ` (${untouched})` : ''}`,
    timed,
    `ranks for ≥ ${m.target}× in measured time: predicted ${formatMs(table.beforeMs)} → ${formatMs(m.predictedMs)}, ${chalk.bold(formatRatio(m.predictedSpeedup))} (at most ${formatRatio(measuredReach(table).maximum)} reachable; summed predicted error ${m.predictedError.toPrecision(3)})`,
    `bench at batch ${bench.batch} (${bench.runs} runs): measured ${chalk.bold(formatRatio(bench.speedup))} [${bench.speedupLow.toFixed(2)}–${formatRatio(bench.speedupHigh)}] against ${formatRatio(m.predictedSpeedup)} predicted (${formatPercent(bench.speedup / m.predictedSpeedup, 0)} of the prediction)`,
  ];
}

function renderMaxLoss(r: MaxLossReport): string[] {
  const of = r.measure === 'top-1' ? 'top-1 accuracy' : 'agreement with the original';
  const rows = r.probes.map((p, i) => [
    String(i + 1), formatRatio(p.target), formatRanks(Object.entries(p.ranks)), formatRatio(p.theoreticalSpeedup),
    `${p.loss.toFixed(2)} ${p.meets ? '✓' : '✗'}`, p.seconds ? `${p.seconds.toFixed(1)} s` : 'same ranks',
  ]);
  const table = renderTable(
    [{ header: 'probe' }, { header: 'target', align: 'right' }, { header: 'ranks' }, { header: 'theoretical', align: 'right' }, { header: `${r.measure} loss (points)`, align: 'right' }, { header: 'fit + check', align: 'right' }],
    rows,
  );
  const c = r.chosen;
  return [
    table,
    `chose ${chalk.bold(formatRatio(c.target))} (${formatRatio(c.theoreticalSpeedup)} by MACs): loses ${chalk.bold(c.loss.toFixed(2))} points of ${of} on ${r.heldOut} held-out images, within ${r.limit}`,
    chalk.dim(`probes: bisection between 1× and ${formatRatio(r.maximum)} (every layer at rank 1); ranks by sensitivity measured on ${r.sensitivity.images} fitting images; ${r.seconds.toFixed(1)} s in all`),
  ];
}

export function renderCompress(r: CompressReport): string {
  const data = r.data;
  const fitted = new Map(data?.layers.map((l) => [l.name, l]));
  const errorCells = (name: string) => {
    if (!data) return [];
    const d = fitted.get(name);
    if (!d) return ['', ''];
    return [formatPercent(d.dataError.filter, 2), `${formatPercent(d.dataError.data, 2)}${d.kept === 'filter' ? ' (kept filter)' : ''}`];
  };
  const rows = r.layers.map((l) => [
    l.name,
    l.label,
    `${l.rank}/${l.fullRank}`,
    `${formatCount(l.macsBefore)} → ${formatCount(l.macsAfter)}`,
    chalk.bold(formatRatio(l.macsBefore / l.macsAfter)),
    `${formatCount(l.paramsBefore)} → ${formatCount(l.paramsAfter)}`,
    formatPercent(l.filterError, 2),
    ...errorCells(l.name),
    l.newLayers.join(', '),
  ]);
  const errorColumns = data
    ? [{ header: 'output error: filter', align: 'right' as const }, { header: 'data', align: 'right' as const }]
    : [];
  const table = renderTable(
    [
      { header: 'layer' }, { header: 'scheme' }, { header: 'rank', align: 'right' }, { header: 'MACs', align: 'right' },
      { header: 'speedup', align: 'right' }, { header: 'params', align: 'right' }, { header: 'filter error', align: 'right' },
      ...errorColumns,
      { header: 'new layers' },
    ],
    rows,
    [[
      'model', '', '', `${formatCount(r.totalMacsBefore)} → ${formatCount(r.totalMacsAfter)}`,
      chalk.bold(formatRatio(r.theoreticalSpeedup)), '', '', ...errorColumns.map(() => ''), '',
    ]],
  );
  const allocation = r.allocation
    ? [chalk.dim(`ranks chosen for ≥ ${r.allocation.target}× (theoretical) by ${ALLOCATION_BASES[r.allocation.basis]} ${r.allocation.predictedError.toPrecision(3)}${r.allocation.baselineError !== null ? ` (the same fraction of every full rank: ${r.allocation.baselineError.toPrecision(3)})` : ''}`)]
    : [];
  const searches = [...(r.maxLoss ? renderMaxLoss(r.maxLoss) : []), ...(r.measured ? renderMeasured(r.measured) : [])];
  const q = r.quickTiming;
  if (q) {
    searches.push(`${formatRatio(r.theoreticalSpeedup)} by MACs; measured ${chalk.bold(formatRatio(q.speedup))} [${q.speedupLow.toFixed(2)}–${formatRatio(q.speedupHigh)}] at batch ${q.batch} on this backend (short timing, ${q.runs} runs; --measured targets time)`);
  }
  searches.push(...skippedNotes(r.skipped).map((line) => chalk.dim(line.replace(/^warning: /, ''))));
  // The verdict on the held-out images comes last, where it is read.
  const ending = r.heldOutWarning ? [chalk.yellow(`warning: ${r.heldOutWarning}`)] : [];
  if (!data) return [table, ...allocation, ...searches].join('\n');
  const held = `${data.images.holdout} held-out images${data.images.holdoutSource === 'eval-data' ? ' (--eval-data)' : ''}`;
  const lines = [
    table,
    ...allocation,
    chalk.dim(`output error = ‖Y − Ŷ‖/‖Y‖ of each layer's linear response in the compressed network on ${held}; data reconstruction ${data.joint ? 'joint' : 'non-joint'}, ${data.images.fit} fitting images`),
  ];
  if (data.accuracy) {
    const a = data.accuracy;
    const tuned = r.finetune?.accuracy != null ? `, data reconstruction + fine-tuning ${chalk.bold(formatPercent(r.finetune.accuracy, 2))}` : '';
    lines.push(`top-1 accuracy on ${a.labeled} held-out images: original ${formatPercent(a.original, 2)}, filter reconstruction ${formatPercent(a.filter, 2)}, data reconstruction ${tuned ? formatPercent(a.data, 2) : chalk.bold(formatPercent(a.data, 2))}${tuned}`);
  }
  lines.push(`agreement with the original's top-1 on ${held}: filter reconstruction ${formatPercent(data.agreement.filter, 2)}, data reconstruction ${chalk.bold(formatPercent(data.agreement.data, 2))}${commonestNote(data.agreement.commonest)}`);
  const f = r.finetune;
  if (f) {
    const outcome = f.kept === 'finetuned'
      ? `kept epoch ${f.bestEpoch} of ${f.epochs}, chosen on ${f.validationImages} fitting images set aside`
      : f.withinNoise
        ? `epoch ${f.withinNoise.epoch} of ${f.epochs} scored better on the ${f.validationImages} fitting images set aside, but within their noise: kept the layer-wise reconstruction`
        : `no epoch of ${f.epochs} beat the layer-wise reconstruction on ${f.validationImages} fitting images set aside: kept it`;
    const how = [f.target, f.labelWeight > 0 ? `labels weighted ${f.labelWeight}` : 'no labels', f.augmented ? 'augmented' : 'not augmented', `step ${f.step.toPrecision(2)} of each weight's rms`].join(', ');
    lines.push(`fine-tuning (${how}, ${f.trainImages} images, ${f.trainedWeights} weights, ${f.seconds.toFixed(1)} s): held-out output error ${formatPercent(f.heldOut.error.data, 2)} → ${formatPercent(f.heldOut.error.finetuned, 2)}, agreement with the original ${formatPercent(f.heldOut.agreement.data, 2)} → ${formatPercent(f.heldOut.agreement.finetuned, 2)}; ${outcome}`);
  }
  return [...lines, ...searches, ...ending].join('\n');
}
