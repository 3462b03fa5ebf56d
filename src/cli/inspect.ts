import type { Command } from 'commander';
import chalk from 'chalk';
import * as path from 'node:path';
import {
  NEAR_ONE, inspectLayers, speedupReach, timingReach, type InspectReport, type SpeedupReach, type TimingReach,
} from '../commands/inspect.js';
import { stderrReporter } from '../reconstruct/index.js';
import { RANK_SUMMARIES, RANK_SUMMARY_KEYS, type RankSummary, type RankSummaryKey } from '../schemes/summary.js';
import { loadModel } from '../model/io.js';
import { listLayers } from '../model/layers.js';
import { formatCount, formatMs, formatPercent, formatRatio, renderTable } from '../report/format.js';
import { note, startBackend } from './common.js';
import { parseFlag } from './flags.js';
import { checkFlagRules } from './rules.js';

/** A conv layer this heavy is the one worth factorizing. */
const HEAVY_SHARE = 0.1;

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description("list every layer's MACs, parameters and share of the model's MACs, with Scheme 2 ranks for each conv and channel-scheme ranks for each 1×1 conv and Dense layer")
    .argument('<model>', 'model.json, or a folder holding one')
    .option('--json', 'print the report as JSON on stdout')
    .option('--no-spectra', 'skip the singular values behind the energy ranks (faster on huge models)')
    .option('--timing [batch]', 'also time the layers compress would replace, and their replacements at a few ranks, on this backend: what replacing them saves in time (default batch 1; takes a while on big models)')
    .action(async (modelPath: string, options: { json?: boolean; spectra: boolean; timing?: string | boolean }, command: Command) => {
      const warnings = checkFlagRules(command);
      const timingBatch = options.timing === undefined ? null : options.timing === true ? 1 : parseFlag('--timing', String(options.timing));
      const backend = await startBackend(command);
      for (const w of warnings) note(chalk.yellow(`lowrank: warning: ${w}`));
      const loaded = await loadModel(modelPath);
      const layers = listLayers(loaded.model);
      const report = await inspectLayers(layers, options.spectra, stderrReporter());
      const reach = speedupReach(layers, loaded.topology, options.spectra, stderrReporter());
      const timing = timingBatch === null ? null : await timingReach(loaded.model, loaded.topology, timingBatch, stderrReporter());
      if (options.json && timing && timing.measuredMaximum < NEAR_ONE) note(chalk.yellow(`lowrank: warning: ${slowWarning(timing)}`));
      if (report.unknownLayers.length) {
        note(chalk.yellow(`lowrank: warning: no cost known for ${report.unknownLayers.join(', ')} (shown as ?; not counted in the total)`));
      }
      const shown = path.relative(process.cwd(), loaded.jsonPath);
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ backend, model: shown, ...report, reach, ...(timing ? { timing } : {}) }, null, 2)}\n`);
      } else {
        process.stdout.write(`${renderInspect(shown, report)}\n`);
        if (reach) process.stdout.write(`\n${renderReach(reach)}\n`);
        if (timing) process.stdout.write(`\n${renderTiming(timing)}\n`);
      }
      loaded.model.dispose();
    });
}

const dims = (xs: number[] | null, sep: string): string => (xs ? xs.join(sep) : '');

export function renderInspect(model: string, report: InspectReport): string {
  const rows = report.layers.map((l) => {
    const heavy = l.macShare !== null && l.macShare >= HEAVY_SHARE && l.kernelSize !== null;
    const mark = (s: string) => (heavy ? chalk.bold.yellow(s) : s);
    const out = Array.isArray(l.outputShape[0]) ? (l.outputShape as number[][]).map((s) => s.join('×')).join(', ') : (l.outputShape as number[]).join('×');
    return [
      mark(l.name),
      l.className,
      dims(l.kernelSize, '×'),
      l.inChannels !== null && l.outChannels !== null ? `${l.inChannels}→${l.outChannels}` : '',
      dims(l.strides, ','),
      out,
      mark(formatCount(l.macs)),
      mark(formatPercent(l.macShare)),
      formatCount(l.params),
    ];
  });
  const table = renderTable(
    [
      { header: 'layer' }, { header: 'class' }, { header: 'kernel' }, { header: 'in→out' }, { header: 'stride' },
      { header: 'output' }, { header: 'MACs', align: 'right' }, { header: 'share', align: 'right' }, { header: 'params', align: 'right' },
    ],
    rows,
    [['total', '', '', '', '', '', formatCount(report.totalMacs), '100%', formatCount(report.totalParams)]],
  );
  const parts = [`${chalk.bold(model)}: MACs and parameters per example`, table];
  const ranksTable = (title: string, rows: [string, RankSummary][]) => {
    if (!rows.length) return;
    parts.push(
      '',
      chalk.bold(title),
      renderTable(
        [
          { header: 'layer' }, { header: 'full', align: 'right' }, { header: 'break-even', align: 'right' },
          { header: '90%', align: 'right' }, { header: '95%', align: 'right' }, { header: '99%', align: 'right' },
        ],
        rows.map(([name, s]) => [name, String(s.fullRank), String(s.breakEvenRank), String(s.energyRanks['0.9']), String(s.energyRanks['0.95']), String(s.energyRanks['0.99'])]),
      ),
    );
  };
  const ranks = (key: RankSummaryKey) => report.layers.flatMap((l): [string, RankSummary][] => (l[key] ? [[l.name, l[key]!]] : []));
  const energy = 'full rank, largest rank that still saves MACs, ranks keeping 90/95/99 % of the kernel energy';
  for (const key of RANK_SUMMARY_KEYS) ranksTable(`${RANK_SUMMARIES[key].title}: ${energy}`, ranks(key));
  parts.push('', coverageLine(report));
  return parts.join('\n');
}

/** Above this many layers the reach table lists layers as rows, so its lines stay short. */
const WIDE_REACH = 8;

export function renderReach(r: SpeedupReach): string {
  const replacing = r.layers.length > WIDE_REACH ? `the ${r.layers.length} layers compress picks by default` : r.layers.join(', ');
  const lines = [
    chalk.bold(`How fast can this get? Replacing ${replacing}: at most ${formatRatio(r.maxSpeedup)} by MACs (every layer at rank 1)`),
    chalk.dim(`held back by: ${r.heldBack}`),
  ];
  if (r.targets.length) {
    const rank = (t: SpeedupReach['targets'][number], n: string) => String(t.ranks[n] ?? '—');
    const reached = r.targets.map((t) => formatRatio(t.theoreticalSpeedup));
    lines.push(
      r.layers.length > WIDE_REACH
        ? renderTable(
          [{ header: 'layer' }, ...r.targets.map((t) => ({ header: formatRatio(t.target), align: 'right' as const }))],
          r.layers.map((n) => [n, ...r.targets.map((t) => rank(t, n))]),
          [['reached', ...reached]],
        )
        : renderTable(
          [{ header: 'target', align: 'right' }, ...r.layers.map((name) => ({ header: name, align: 'right' as const })), { header: 'reached', align: 'right' }],
          r.targets.map((t, i) => [formatRatio(t.target), ...r.layers.map((n) => rank(t, n)), reached[i]]),
        ),
      chalk.dim('ranks per layer for each whole-model target (least summed filter error; — leaves the layer as it is); compress --speedup <x> chooses them for you'),
    );
  }
  return lines.join('\n');
}

/** The warning for a model whose layers, replaced, would barely save time. */
export function slowWarning(t: TimingReach): string {
  return `replacing layers will barely speed this model up on ${t.backend}: at most ${formatRatio(t.measuredMaximum)} in measured time at batch ${t.batch}, against ${formatRatio(t.macMaximum)} by MACs (its time is in layers lowrank cannot replace, and in fixed costs per layer)`;
}

export function renderTiming(t: TimingReach): string {
  const rows = [...t.layers]
    .sort((a, b) => (b.originalMs - b.fastestMs) - (a.originalMs - a.fastestMs))
    .map((l) => [l.name, formatMs(l.originalMs), `${formatMs(l.fastestMs)} (rank ${l.fastestRank})`, formatMs(l.originalMs - l.fastestMs), formatPercent((l.originalMs - l.fastestMs) / t.beforeMs)]);
  return [
    chalk.bold(`Time on ${t.backend} at batch ${t.batch}: the original takes ${formatMs(t.beforeMs)}; replacing layers reaches at most ${formatRatio(t.measuredMaximum)} measured (${formatRatio(t.macMaximum)} by MACs)`),
    chalk.dim(`held back by: ${t.heldBack}`),
    renderTable(
      [{ header: 'layer' }, { header: 'time', align: 'right' }, { header: 'replacement at its fastest', align: 'right' }, { header: 'saves', align: 'right' }, { header: 'of the model', align: 'right' }],
      rows,
    ),
    chalk.dim(`each layer's replacement timed at a few ranks inside whole-model runs (${t.seconds.toFixed(1)} s); compress --speedup <x> --measured chooses ranks in this time`),
    ...(t.measuredMaximum < NEAR_ONE ? [chalk.yellow(`warning: ${slowWarning(t)}`)] : []),
  ].join('\n');
}

/** Which MACs no scheme can replace, and which replaceable layers compress leaves out by default. */
function coverageLine(report: InspectReport): string {
  const { share, byClass } = report.unreplaceable;
  const classes = Object.entries(byClass).sort((a, b) => b[1] - a[1]).map(([c, f]) => `${c} ${formatPercent(f)}`);
  const left = report.layers.filter((l) => l.replaceable && !l.defaultCandidate && l.macShare).map((l) => `${l.name} ${formatPercent(l.macShare)}`);
  return [
    `MACs no scheme can replace: ${formatPercent(share)}${classes.length ? ` (${classes.join(', ')})` : ''}`,
    ...(left.length ? [`replaceable but left out without --layers (first conv, last layer): ${left.join(', ')}`] : []),
  ].join('\n');
}
