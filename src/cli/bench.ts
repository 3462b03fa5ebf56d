import type { Command } from 'commander';
import chalk from 'chalk';
import * as path from 'node:path';
import { BROWSER_BACKENDS, benchInBrowser, type BrowserBackend } from '../browser/bench.js';
import { findChromium, withChromium } from '../browser/chromium.js';
import { UserError } from '../errors.js';
import { listImages, probeImages, skippedNote, type BatchStats } from '../data/images.js';
import { accuracyProblem, chanceWarning } from '../data/labels.js';
import { loadModel } from '../model/io.js';
import { stderrReporter } from '../report/progress.js';
import { formatBytes, formatCount, formatMs, formatPercent, formatRatio, renderTable } from '../report/format.js';
import { addImageOptions, addTimingOptions, commonestNote, note, startBackend, type ImageFlags } from './common.js';
import { parseFlag, parseFlagList } from './flags.js';
import { checkFlagRules } from './rules.js';
import { imageSetup } from './images.js';
import { MIN_RUNS, checkBatchMemory, checkComparable } from '../timing/loop.js';
import { NOISE_MARGIN, type Ratio } from '../timing/stats.js';
import { compareOnImages, compareOnRandom, type Agreement, type PairPredict } from '../timing/agreement.js';
import { benchHere, browserReport, type BenchReport } from '../commands/bench.js';

interface BenchFlags extends ImageFlags {
  data?: string;
  batch: string;
  runs: string;
  warmup: string;
  perLayer?: boolean;
  json?: boolean;
  browser?: boolean;
  backends?: string;
  chromium?: string;
}

/** The --backends list, checked. */
function browserBackends(list: string): BrowserBackend[] {
  const names = list.split(',').map((s) => s.trim());
  const wrong = names.find((n) => !(BROWSER_BACKENDS as readonly string[]).includes(n));
  if (wrong !== undefined) throw new UserError(`--backends ${list}: '${wrong}' is not a browser backend; choose from ${BROWSER_BACKENDS.join(', ')}`);
  return [...new Set(names as BrowserBackend[])];
}

export function registerBench(program: Command): void {
  const command = program
    .command('bench')
    .description('measure two models side by side: latency, speedup, agreement and accuracy on one backend')
    .argument('<before>', 'the original model (model.json or its folder)')
    .argument('<after>', 'the compressed model (model.json or its folder)')
    .option('--data <dir>', 'images to check accuracy and agreement on (one subfolder per class)')
    .option('--batch <sizes>', 'comma-separated batch sizes to time', '1,32')
    .option('--per-layer', 'time each conv layer and its replacement inside the model runs, at the largest batch')
    .option('--json', 'print the report as JSON on stdout')
    .option('--browser', 'run both models in headless Chromium with stock tfjs instead of in this process')
    .option('--backends <list>', 'with --browser: comma-separated tfjs backends to run on (wasm, webgl, webgpu)', 'wasm,webgl')
    .option('--chromium <path>', 'with --browser: the Chromium or Chrome to run (default: CHROME_PATH, else chromium on PATH)');
  addImageOptions(addTimingOptions(command)).action(async (beforePath: string, afterPath: string, flags: BenchFlags, cmd: Command) => {
    const warnings = checkFlagRules(cmd);
    const backend = await startBackend(cmd);
    for (const w of warnings) note(chalk.yellow(`lowrank: warning: ${w}`));
    const batches = parseFlagList('--bench-batch', flags.batch, '--batch');
    const runs = parseFlag('--runs', flags.runs);
    const warmup = parseFlag('--warmup', flags.warmup);
    const browser = flags.browser ? { backends: browserBackends(flags.backends!), executable: findChromium(flags.chromium) } : null;
    const setup = flags.data ? imageSetup(cmd, flags, beforePath) : null;
    const images = flags.data && setup ? listImages(flags.data, setup.labels) : null;
    const a = await loadModel(beforePath);
    const b = await loadModel(afterPath);
    checkComparable(a.model, b.model);
    checkBatchMemory(a.model, batches);
    const unlabeled = images && accuracyProblem(a.model, images.classes, flags.data!, setup?.labels);
    if (unlabeled) note(chalk.yellow(`lowrank: warning: ${unlabeled}`));

    const entries = images && (unlabeled ? images.entries.map((e) => ({ ...e, label: null })) : images.entries);
    if (entries && setup) for (const [m, which] of [[a, 'the before model'], [b, 'the after model']] as const) await probeImages(m.model, entries, setup.pixels, which);
    let noted = false;
    /** Agreement and accuracy with the models run here, or by `predict` (in a browser); the notes once. */
    const agreementOn = async (predict?: PairPredict): Promise<Agreement> => {
      note('lowrank: checking agreement and accuracy');
      const stats: BatchStats = { skipped: [], decoded: 0 };
      const agreement = entries && setup ? await compareOnImages(a.model, b.model, entries, setup.pixels, 64, stats, predict) : await compareOnRandom(a.model, b.model, 64, predict);
      const skipped = skippedNote(stats);
      const chance = agreement.accuracyBefore !== null && chanceWarning(a.model, agreement.accuracyBefore, agreement.labeled);
      if (!noted) {
        if (skipped) note(`lowrank: ${skipped}`);
        if (chance) note(chalk.yellow(`lowrank: warning: ${chance}`));
        noted = true;
      }
      return agreement;
    };
    const timing = `timing batches ${batches.join(', ')} (${warmup} warm-up + at least ${Math.max(runs, MIN_RUNS)} runs each, interleaved)`;
    const reporter = stderrReporter();
    if (browser) {
      const result = await withChromium(browser.executable, (chromium) => benchInBrowser({
        browser: chromium, before: a, after: b, backends: browser.backends, batches, runs, warmup, agreementOn, reporter,
        onBackend: (name) => note(`lowrank: ${path.basename(browser.executable)}, tfjs backend ${name}: agreement, then ${timing}`),
      }));
      const report = browserReport(a, b, result);
      process.stdout.write(`${flags.json ? JSON.stringify(report, null, 2) : renderBrowserBench(report)}\n`);
      return;
    }
    const agreement = await agreementOn();
    note(`lowrank: ${timing}`);
    const report = await benchHere(backend, a, b, agreement, { batches, runs, warmup, perLayer: Boolean(flags.perLayer), reporter, log: note });
    if (flags.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else process.stdout.write(`${renderBench(report)}\n`);
  });
}

/** Per-layer runs whose model time is further than this from the speed table's get a warning. */
const SUM_TOLERANCE = 0.1;
/** At batch 1, a fixed overhead above this share of the model time gets a note. */
const OVERHEAD_NOTE_SHARE = 0.25;

/** "6.77× [6.60–6.90×]", "0.80× (slower)", "— (within noise)"; the interval only when asked. */
function formatSpeedup(r: Ratio, interval: boolean): string {
  const range = interval ? ` [${r.speedupLow.toFixed(2)}–${formatRatio(r.speedupHigh)}]` : '';
  if (r.verdict === 'within noise') return `${interval ? formatRatio(r.speedup) : '—'} (within noise)${range}`;
  if (r.verdict === 'slower') return `${chalk.red(`${formatRatio(r.speedup)} (slower)`)}${range}`;
  return `${chalk.bold(formatRatio(r.speedup))}${range}`;
}

function renderBrowserBench(r: ReturnType<typeof browserReport>): string {
  return r.browser.backends.map((b) => {
    const title = chalk.bold(`Chromium ${r.browser.version}, tfjs ${b.backend}`);
    if ('unavailable' in b) return `${title}: unavailable (${b.unavailable})`;
    return `${title} (${b.detail}); outputs within ${b.nodeMaxAbsDiff.toExponential(1)} of this process's\n\n${renderBench(b)}`;
  }).join('\n\n');
}

export function renderBench(r: BenchReport): string {
  const speed = r.batches.map((t) => [
    String(t.batch),
    `${formatMs(t.before.medianMs)} (${formatMs(t.before.p10Ms)}–${formatMs(t.before.p90Ms)})`,
    `${formatMs(t.after.medianMs)} (${formatMs(t.after.p10Ms)}–${formatMs(t.after.p90Ms)})`,
    `${t.before.imagesPerSec.toFixed(0)} → ${t.after.imagesPerSec.toFixed(0)}`,
    String(t.runs),
    formatSpeedup(t, true),
    formatPercent(t.speedup / r.theoreticalSpeedup, 0),
  ]);
  const warnings = r.batches.flatMap((t) => [
    ...(t.wide ? [`batch ${t.batch}: the speedup's 95% interval is too wide to read; raise --runs or time on a quieter machine`] : []),
    ...(t.verdict === 'within noise' ? [`batch ${t.batch}: no measurable difference (the 95% interval reaches within ${formatPercent(NOISE_MARGIN, 0)} of 1×)`] : []),
  ]);
  const parts = [
    `${chalk.bold('before')} ${r.before.path}: ${formatCount(r.before.macs)} MACs, ${formatCount(r.before.params)} params, ${formatBytes(r.before.bytes)}`,
    `${chalk.bold('after')}  ${r.after.path}: ${formatCount(r.after.macs)} MACs, ${formatCount(r.after.params)} params, ${formatBytes(r.after.bytes)}`,
    `theoretical speedup (MACs): ${chalk.bold(formatRatio(r.theoreticalSpeedup))} · backend ${r.backend}`,
    '',
    renderTable(
      [
        { header: 'batch', align: 'right' }, { header: 'before: median (p10–p90)' }, { header: 'after: median (p10–p90)' },
        { header: 'images/s' }, { header: 'runs', align: 'right' }, { header: 'speedup [95% interval]' }, { header: 'of theoretical', align: 'right' },
      ],
      speed,
    ),
    ...warnings.map((w) => chalk.yellow(w)),
    chalk.dim('speedup = median of paired before/after ratios, with a distribution-free 95% interval of that median; "of theoretical" = measured / theoretical speedup: how much of the MAC saving this backend turns into time'),
  ];
  const o = r.overheadAtBatch1;
  if (o && Math.max(o.before.fixedMs / o.before.modelMs, o.after.fixedMs / o.after.modelMs) >= OVERHEAD_NOTE_SHARE) {
    parts.push(
      `at batch 1, fixed per-layer overhead is ~${formatMs(o.after.fixedMs)} of ${formatMs(o.after.modelMs)} in the compressed model ` +
        `(${o.after.layers} layers, ~${formatMs(o.after.fixedMs / o.after.layers)} each; before: ~${formatMs(o.before.fixedMs)} of ${formatMs(o.before.modelMs)}); fewer, larger layers help`,
    );
  }
  parts.push('');
  const on = r.randomInputs ? `${r.examples} fixed-seed random inputs (no --data)` : `${r.examples} images`;
  parts.push(`agreement on ${on}: top-1 ${chalk.bold(formatPercent(r.agreement, 1))}${commonestNote(r.commonest)}, max |Δ| ${r.maxAbsDiff.toExponential(2)}, mean |Δ| ${r.meanAbsDiff.toExponential(2)}`);
  if (r.accuracyDelta !== undefined) {
    const d = r.accuracyDelta * 100;
    const delta = `${d >= 0 ? '+' : ''}${d.toFixed(2)} points`;
    parts.push(`top-1 accuracy: ${formatPercent(r.before.accuracy!, 2)} → ${formatPercent(r.after.accuracy!, 2)} (${d < -1 ? chalk.red(delta) : chalk.green(delta)})`);
  }
  const p = r.perLayer;
  if (p) {
    const off = (sum: number, model: number) => Math.abs(sum / model - 1) > SUM_TOLERANCE;
    parts.push(
      '',
      renderTable(
        [
          { header: 'layer' }, { header: 'before', align: 'right' }, { header: 'time', align: 'right' }, { header: 'MACs', align: 'right' },
          { header: 'after', align: 'right' }, { header: 'time', align: 'right' }, { header: 'MACs', align: 'right' },
          { header: 'speedup' }, { header: 'replaced by' },
        ],
        [
          ...p.blocks.map((l) => [
            l.name, formatMs(l.beforeMs), formatPercent(l.beforeTimeShare), formatPercent(l.beforeMacShare),
            formatMs(l.afterMs), formatPercent(l.afterTimeShare), formatPercent(l.afterMacShare),
            l.unchanged ? '— (same layer)' : formatSpeedup(l, false), l.afterLayers.join(', '),
          ]),
          ['other', formatMs(p.other.beforeMs), formatPercent(p.other.beforeMs / p.beforeMs), '', formatMs(p.other.afterMs), formatPercent(p.other.afterMs / p.afterMs), '', formatSpeedup(p.other, false), ''],
        ],
        [['sum', formatMs(p.beforeMs), formatPercent(p.beforeMs / p.modelBeforeMs), '', formatMs(p.afterMs), formatPercent(p.afterMs / p.modelAfterMs), '', '', '']],
      ),
      chalk.dim(
        `per layer: time inside ${p.runs} interleaved runs of each whole model at batch ${p.batch} (mean over the runs between the quartiles), with its share of those runs' time and of the MACs; ` +
          'other = the remaining layers (activations, pooling, flatten, dense, softmax), bookkeeping and read-back; sum = as a share of the model time in the speed table',
      ),
    );
    if (off(p.beforeMs, p.modelBeforeMs) || off(p.afterMs, p.modelAfterMs)) {
      parts.push(chalk.yellow(
        `the per-layer times add up to ${formatMs(p.beforeMs)} → ${formatMs(p.afterMs)}, more than ${formatPercent(SUM_TOLERANCE, 0)} off the speed table's ${formatMs(p.modelBeforeMs)} → ${formatMs(p.modelAfterMs)}: the machine's speed changed between the two; time on a quieter machine`,
      ));
    }
  }
  return parts.join('\n');
}
