/**
 * The `bench` command's report, without the CLI: the speed table of two models timed side by side,
 * their agreement, and (asked for, or at batch 1 for the fixed overhead) each conv layer's time
 * beside its replacement's. src/cli/bench.ts parses the flags, checks the models and renders it.
 */
import * as path from 'node:path';
import type { LoadedModel } from '../model/io.js';
import { modelMacs } from '../model/cost.js';
import { listLayers } from '../model/layers.js';
import { readReplacementRecords } from '../model/records.js';
import type { Log, Reporter } from '../report/progress.js';
import type { BrowserRuns } from '../browser/bench.js';
import type { Agreement } from '../timing/agreement.js';
import { timeLayers, type LayerTiming } from '../timing/layers.js';
import { timeModels, type BatchTiming } from '../timing/loop.js';

export interface BenchSettings {
  batches: number[];
  runs: number;
  warmup: number;
  /** Time each conv layer and its replacement at the largest batch. */
  perLayer: boolean;
  reporter: Reporter;
  log: Log;
}

/** Both models timed in this process at every batch (and layer by layer where asked), as the report. */
export async function benchHere(backend: string, a: LoadedModel, b: LoadedModel, agreement: Agreement, { batches, runs, warmup, perLayer: byLayer, reporter, log }: BenchSettings): Promise<BenchReport> {
  const timings = await timeModels(a.model, b.model, batches, runs, warmup, reporter);
  const largest = timings[timings.length - 1];
  const replaced = readReplacementRecords(b.userDefinedMetadata);
  let perLayer: LayerTiming | undefined;
  if (byLayer) {
    perLayer = await timeLayers(a.model, b.model, largest.batch, runs, warmup, replaced, reporter);
  }
  let atBatch1: LayerTiming | undefined;
  if (batches.includes(1)) {
    if (perLayer?.batch !== 1) log('lowrank: timing layers at batch 1 (fixed overhead)');
    atBatch1 = perLayer?.batch === 1 ? perLayer : await timeLayers(a.model, b.model, 1, runs, warmup, replaced);
  }
  return benchReport(backend, a, b, timings, agreement, perLayer, atBatch1);
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

/** A per-layer table with the model time of the same batch in the speed table, timed apart from it. */
function withModelTimes(t: LayerTiming, batches: BatchTiming[]) {
  const model = batches.find((x) => x.batch === t.batch)!;
  return { ...t, modelBeforeMs: model.before.medianMs, modelAfterMs: model.after.medianMs };
}

export function benchReport(
  backend: string, a: LoadedModel, b: LoadedModel, batches: BatchTiming[], g: Agreement, perLayer?: LayerTiming, atBatch1?: LayerTiming,
) {
  const before = side(a, g.accuracyBefore);
  const after = side(b, g.accuracyAfter);
  return {
    backend,
    before,
    after,
    theoreticalSpeedup: before.macs / after.macs,
    batches,
    agreement: g.agreement,
    commonest: g.commonest,
    maxAbsDiff: g.maxAbsDiff,
    meanAbsDiff: g.meanAbsDiff,
    examples: g.examples,
    randomInputs: g.randomInputs,
    ...(g.accuracyBefore !== null && g.accuracyAfter !== null ? { accuracyDelta: g.accuracyAfter - g.accuracyBefore } : {}),
    ...(perLayer ? { perLayer: withModelTimes(perLayer, batches) } : {}),
    ...(atBatch1 ? { overheadAtBatch1: atBatch1.overhead } : {}),
  };
}

export type BenchReport = ReturnType<typeof benchReport>;

/** The Node bench's report once per browser backend, with what it ran on and how far its outputs are from this process's. */
export function browserReport(a: LoadedModel, b: LoadedModel, runs: BrowserRuns) {
  const backends = runs.backends.map((r) => ('unavailable' in r ? r : { ...benchReport(r.backend, a, b, r.batches, r.agreement), detail: r.detail, nodeMaxAbsDiff: r.nodeMaxAbsDiff }));
  return { browser: { version: runs.version, backends } };
}
