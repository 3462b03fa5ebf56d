/**
 * The bench inside a browser: both models loaded by stock tfjs in a headless Chromium page, timed
 * and compared there with the Node bench's own timing loop, statistics and agreement counting
 * (src/timing/), once per backend. Node keeps its own copy of both models for the checks that
 * explain a bad output, and to tell how far the browser's outputs are from its own.
 */
import * as tf from '@tensorflow/tfjs';
import type { Browser } from 'playwright-core';
import type { LoadedModel } from '../model/io.js';
import { silentReporter, type Reporter } from '../report/progress.js';
import { openContext } from './chromium.js';
import { PageDriver, pageHtml, toBase64, type ModelName, type PageTensor } from './page.js';
import { startServer, type StaticServer } from './server.js';
import { predictHere, type Agreement, type PairPredict } from '../timing/agreement.js';
import { randomInput, timeBatches, type BatchTiming } from '../timing/loop.js';

/** The backends --backends may name. */
export const BROWSER_BACKENDS = ['wasm', 'webgl', 'webgpu'] as const;
export type BrowserBackend = (typeof BROWSER_BACKENDS)[number];

/** Most examples sent into the page in one call when checking agreement (a 224×224×3 batch of 16 is 9.6 MB). */
const PREDICT_CHUNK = 16;

export interface BrowserBackendRun {
  backend: BrowserBackend;
  /** What it ran on: wasm's SIMD and threads, the WebGL renderer. */
  detail: string;
  batches: BatchTiming[];
  agreement: Agreement;
  /** Largest |browser − Node| over both models' outputs on the agreement inputs. */
  nodeMaxAbsDiff: number;
}

export interface UnavailableBackend {
  backend: BrowserBackend;
  unavailable: string;
}

export interface BrowserRuns {
  /** Chromium's version. */
  version: string;
  backends: (BrowserBackendRun | UnavailableBackend)[];
}

export interface BrowserBenchOptions {
  browser: Browser;
  before: LoadedModel;
  after: LoadedModel;
  backends: BrowserBackend[];
  batches: number[];
  runs: number;
  warmup: number;
  /** Agreement of the two models given a way to run them (on the user's images or random inputs). */
  agreementOn: (predict: PairPredict) => Promise<Agreement>;
  reporter?: Reporter;
  /** Told as each backend starts. */
  onBackend?: (backend: BrowserBackend) => void;
}

const toTensors = (outs: PageTensor[]) => outs.map((o) => tf.tensor(o.values, o.shape));

/**
 * Outputs computed in the page, `x` sent in chunks; also tracks the largest difference from the
 * same models run here.
 */
function predictInPage(driver: PageDriver, here: PairPredict, diff: { max: number }): PairPredict {
  return async (x) => {
    const parts: Record<ModelName, tf.Tensor[][]> = { before: [], after: [] };
    const n = x.shape[0];
    for (let start = 0; start < n; start += PREDICT_CHUNK) {
      const chunk = x.slice(start, Math.min(PREDICT_CHUNK, n - start));
      const out = await driver.call('predict', toBase64(chunk), chunk.shape);
      chunk.dispose();
      parts.before.push(toTensors(out.before));
      parts.after.push(toTensors(out.after));
    }
    const joined = (which: ModelName) => parts[which][0].map((_, o) => tf.concat(parts[which].map((p) => p[o])));
    const result = { before: joined('before'), after: joined('after') };
    tf.dispose([...parts.before.flat(), ...parts.after.flat()]);
    const local = await here(x);
    for (const which of ['before', 'after'] as const) {
      result[which].forEach((y, o) => {
        const d = tf.tidy(() => tf.abs(tf.sub(y, local[which][o])).max().dataSync()[0]);
        diff.max = Math.max(diff.max, Number.isNaN(d) ? Infinity : d);
      });
    }
    tf.dispose([...local.before, ...local.after]);
    return result;
  };
}

async function runBackend(server: StaticServer, o: BrowserBenchOptions, backend: BrowserBackend): Promise<BrowserBackendRun | UnavailableBackend> {
  const context = await openContext(o.browser, server.origin);
  try {
    const driver = await PageDriver.open(await context.newPage(), server.origin);
    const started = await driver.call('start', backend);
    if (!started.ok) return { backend, unavailable: started.reason };
    await driver.call('load', { before: server.modelUrls.before, after: server.modelUrls.after });
    const diff = { max: 0 };
    const agreement = await o.agreementOn(predictInPage(driver, predictHere(o.before.model, o.after.model), diff));
    const batches = await timeBatches(o.batches, o.runs, o.warmup, async (batch) => {
      const x = randomInput(o.before.model.inputs[0].shape, batch);
      await driver.call('setInput', toBase64(x), x.shape);
      x.dispose();
      return { before: () => driver.call('time', 'before'), after: () => driver.call('time', 'after'), release: () => driver.call('release') };
    }, o.reporter ?? silentReporter);
    return { backend, detail: started.detail, batches, agreement, nodeMaxAbsDiff: diff.max };
  } finally {
    await context.close();
  }
}

/**
 * Times and compares the two models in `browser`, one fresh page per backend; backends the browser
 * cannot start are reported as unavailable.
 */
export async function benchInBrowser(o: BrowserBenchOptions): Promise<BrowserRuns> {
  const server = await startServer(pageHtml(), { before: o.before, after: o.after });
  try {
    const backends: BrowserRuns['backends'] = [];
    for (const backend of o.backends) {
      o.onBackend?.(backend);
      backends.push(await runBackend(server, o, backend));
    }
    return { version: o.browser.version(), backends };
  } finally {
    await server.close();
  }
}
