/**
 * `lowrank bench --browser` checked against an independent in-browser timing taken in the same run:
 * the demo pair (charcnn and its scheme-2 compression, conv2=21 and conv3=52, fitted to the
 * Fashion-MNIST samples) through the CLI at batch 32 on wasm and webgl, then the same two models
 * timed by a plain page — tf.loadLayersModel, predict, dataSync, a median of blocks of runs — on
 * wasm in the same Chromium. Needs a Chromium (CHROME_PATH or chromium on PATH).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as tfTypes from '@tensorflow/tfjs';
import { findChromium, openContext, withChromium } from '../src/browser/chromium.js';
import { pageHtml } from '../src/browser/page.js';
import { startServer } from '../src/browser/server.js';
import { readModelFiles } from '../src/model/io.js';
import { ROOT, WORK, heading, markdownTable, timeCli } from './common.js';

declare const tf: typeof tfTypes;

const CHARCNN = path.join(ROOT, 'fixtures', 'charcnn', 'model.json');
const BATCH = 32;
/** The tolerance between lowrank's wasm figure and the independent one. */
const TOLERANCE = 0.35;

/** The demo's compressed model, made once and reused. */
function demoModel(): string {
  const out = path.join(WORK, 'browser-demo');
  if (!fs.existsSync(path.join(out, 'model.json'))) {
    timeCli(['--backend', 'wasm', 'compress', CHARCNN, '--scheme', '2', '--rank', 'conv2=21,conv3=52', '--data', path.join(ROOT, 'fixtures', 'fashion', 'train'), '--out', out, '--force']);
  }
  return path.join(out, 'model.json');
}

/** Median ms per model: blocks of runs, before and after in turn, each run predict + dataSync. */
async function independentTiming(chromium: string, after: string): Promise<{ beforeMs: number; afterMs: number }> {
  const server = await startServer(pageHtml(), { before: readModelFiles(CHARCNN), after: readModelFiles(after) });
  try {
    return await withChromium(chromium, async (browser) => {
      const context = await openContext(browser, server.origin);
      const page = await context.newPage();
      await page.goto(`${server.origin}/`);
      return page.evaluate(async ({ urls, batch }) => {
        await tf.setBackend('wasm');
        const models = [await tf.loadLayersModel(urls.before), await tf.loadLayersModel(urls.after)];
        const x = tf.randomUniform([batch, 24, 24, 1]);
        const times: number[][] = [[], []];
        const run = (k: number) => {
          const start = performance.now();
          const y = models[k].predict(x) as tfTypes.Tensor;
          y.dataSync();
          const ms = performance.now() - start;
          y.dispose();
          return ms;
        };
        for (let k = 0; k < 2; k++) for (let i = 0; i < 3; i++) run(k);
        for (let block = 0; block < 4; block++) for (let k = 0; k < 2; k++) for (let i = 0; i < 10; i++) times[k].push(run(k));
        const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
        return { beforeMs: median(times[0]), afterMs: median(times[1]) };
      }, { urls: server.modelUrls as { before: string; after: string }, batch: BATCH });
    });
  } finally {
    await server.close();
  }
}

export async function runBrowserBench(): Promise<void> {
  heading(`bench --browser on the demo pair at batch ${BATCH}, against an independent in-browser timing`);
  const chromium = findChromium(undefined);
  const after = demoModel();
  const load = () => os.loadavg()[0].toFixed(1);
  const loadBefore = load();
  const cli = timeCli(['--backend', 'wasm', 'bench', CHARCNN, after, '--browser', '--batch', String(BATCH), '--json']);
  const report = JSON.parse(cli.stdout) as { browser: { version: string; backends: { backend: string; detail?: string; unavailable?: string; batches?: { before: { medianMs: number }; after: { medianMs: number }; speedup: number }[] }[] } };
  const independent = await independentTiming(chromium, after);
  const rows: (string | number)[][] = report.browser.backends.map((b) => {
    if (!b.batches) return [b.backend, 'unavailable', '', '', ''];
    const [t] = b.batches;
    return [`lowrank bench --browser, ${b.backend} (${b.detail})`, t.before.medianMs.toFixed(1), t.after.medianMs.toFixed(1), `${t.speedup.toFixed(2)}×`, ''];
  });
  const ratio = independent.beforeMs / independent.afterMs;
  const wasm = report.browser.backends.find((b) => b.backend === 'wasm')?.batches?.[0];
  const off = wasm ? wasm.speedup / ratio - 1 : NaN;
  rows.push(['independent page, wasm (predict + dataSync, median of 40 runs)', independent.beforeMs.toFixed(1), independent.afterMs.toFixed(1), `${ratio.toFixed(2)}×`,
    `${(off * 100).toFixed(0)} % (tolerance ±${TOLERANCE * 100} %)`]);
  process.stdout.write(`Chromium ${report.browser.version}; load average ${loadBefore} before, ${load()} after\n\n`);
  markdownTable(['timing', 'before (ms)', 'after (ms)', 'speedup', 'lowrank wasm vs independent'], rows);
}
