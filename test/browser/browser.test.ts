/**
 * bench --browser: the loopback server's file list, the missing-Chromium message, and — when a
 * Chromium is installed — the fixture and its compressed version loaded by stock tfjs in the real
 * browser, giving Node's outputs on wasm and webgl. One browser serves the in-browser tests.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Browser } from 'playwright-core';
import { useBackend } from '../../src/runtime/backend.js';
import { findChromium, launchChromium, openContext } from '../../src/browser/chromium.js';
import { PageDriver, pageHtml, toBase64 } from '../../src/browser/page.js';
import { startServer, type StaticServer } from '../../src/browser/server.js';
import { DEFAULT_PIXELS, listImages } from '../../src/data/images.js';
import { UserError } from '../../src/errors.js';
import { loadModel, readModelFiles, type LoadedModel } from '../../src/model/io.js';
import { CHARCNN, FASHION_TEST, cli, errorLine, imageSubset, tempDir } from '../helpers.js';
import { compareOnImages } from '../../src/timing/agreement.js';

before(async () => {
  await useBackend('wasm');
});

/** The Chromium these tests run, or null: then the in-browser tests are skipped, saying why. */
const chromium = (() => {
  try {
    return findChromium(undefined);
  } catch {
    return null;
  }
})();
const NO_CHROMIUM = 'no Chromium found: install it (apt-get install chromium) or set CHROME_PATH to run the in-browser tests';

/** Status and body of a GET of `rawPath`, sent as is (no URL normalization on the way). */
function get(origin: string, rawPath: string, method = 'GET'): Promise<{ status: number; body: Buffer }> {
  const { hostname, port } = new URL(origin);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path: rawPath, method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the browser bench server', () => {
  let server: StaticServer;
  let model: string;
  before(async () => {
    // A model folder holding one more file than the model, and a file beside the folder: both must stay unserved.
    const root = tempDir();
    fs.cpSync(path.dirname(CHARCNN), path.join(root, 'm'), { recursive: true });
    model = path.join(root, 'm', 'model.json');
    fs.writeFileSync(path.join(root, 'm', 'private.txt'), 'not part of the model');
    fs.writeFileSync(path.join(root, 'secret.txt'), 'outside the model folder');
    server = await startServer(pageHtml(), { before: readModelFiles(model) });
  });
  after(() => server.close());

  test('listens on the loopback address and serves the page, the tfjs bundles, model.json and its shard', async () => {
    assert.match(server.origin, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(server.modelUrls.before, `${server.origin}/models/before/model.json`);
    const page = await get(server.origin, '/');
    assert.equal(page.status, 200);
    assert.match(page.body.toString(), /<script src="\/lib\/tf\.min\.js"><\/script>/);
    for (const file of ['tf.min.js', 'tf-backend-wasm.min.js', 'tfjs-backend-wasm-simd.wasm']) assert.equal((await get(server.origin, `/lib/${file}`)).status, 200, file);
    const json = await get(server.origin, '/models/before/model.json');
    assert.equal(json.status, 200);
    assert.deepEqual(json.body, fs.readFileSync(model));
    const shard = await get(server.origin, '/models/before/group1-shard1of1.bin');
    assert.deepEqual(shard.body, fs.readFileSync(path.join(path.dirname(model), 'group1-shard1of1.bin')));
  });

  test('answers 404 to path traversal and to anything outside the model files and the bundles', async () => {
    const refused = [
      '/models/before/../secret.txt',
      '/models/before/%2e%2e/secret.txt',
      '/models/before/..%2fsecret.txt',
      '/models/before/../../package.json',
      '/lib/../../../package.json',
      '/lib/%2e%2e/package.json',
      '/lib/index.js', // in the package's dist folder, but not a bundle
      '/models/before/private.txt', // beside the model, but not one of its files
      '/models/before/',
      '/models/after/model.json', // no such model
      '/package.json',
      `/${path.relative('/', model)}`,
      '/%ZZ',
    ];
    for (const p of refused) assert.equal((await get(server.origin, p)).status, 404, p);
    assert.equal((await get(server.origin, '/models/before/model.json', 'POST')).status, 404, 'POST');
  });
});

describe('bench --browser without Chromium', () => {
  test('a path given that holds no browser: one line saying how to install one', () => {
    assert.throws(() => findChromium('/no/such/chromium', {}), (err: Error) => {
      assert.ok(err instanceof UserError);
      assert.equal(err.message, '--chromium /no/such/chromium: no executable file there; install it (apt-get install chromium) or give its path with --chromium <path> or CHROME_PATH');
      return true;
    });
  });

  test('none on PATH and no CHROME_PATH: the CLI fails with the one-line hint before reading any model', async () => {
    assert.throws(() => findChromium(undefined, { PATH: tempDir() }), /^UserError: no Chromium found for --browser: install it \(apt-get install chromium\)/);
    const saved = { PATH: process.env.PATH, CHROME_PATH: process.env.CHROME_PATH };
    process.env.PATH = tempDir();
    delete process.env.CHROME_PATH;
    try {
      // The before model does not exist: the missing browser is reported first, before any slow work.
      const run = await cli(['bench', path.join(tempDir(), 'missing.json'), CHARCNN, '--browser']);
      assert.notEqual(run.code, 0);
      assert.equal(errorLine(run), 'lowrank: no Chromium found for --browser: install it (apt-get install chromium) or give its path with --chromium <path> or CHROME_PATH');
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.CHROME_PATH !== undefined) process.env.CHROME_PATH = saved.CHROME_PATH;
    }
  });
});

describe('bench --browser flags', () => {
  test('an unknown backend, --per-layer with --browser, and --backends or --chromium without it: one-line errors', async () => {
    const cases: [string[], string][] = [
      [['--browser', '--backends', 'wasm,gpu'], "lowrank: --backends wasm,gpu: 'gpu' is not a browser backend; choose from wasm, webgl, webgpu"],
      [['--browser', '--per-layer'], 'lowrank: --per-layer times layers in this process; leave it out with --browser'],
      [['--backends', 'wasm'], "lowrank: --backends applies to the browser bench's tfjs backends: give --browser too"],
      [['--chromium', 'chromium'], 'lowrank: --chromium applies to the browser bench (it chooses the browser): give --browser too'],
    ];
    for (const [flags, message] of cases) {
      const run = await cli(['bench', CHARCNN, CHARCNN, ...flags]);
      assert.notEqual(run.code, 0, flags.join(' '));
      assert.equal(errorLine(run), message);
    }
  });
});

describe('in Chromium', { skip: chromium ? false : NO_CHROMIUM }, () => {
  let browser: Browser;
  let original: LoadedModel;
  let compressed: LoadedModel;
  let compressedPath: string;
  before(async () => {
    compressedPath = path.join(tempDir(), 'c');
    const made = await cli(['compress', CHARCNN, '--scheme', '2', '--rank', 'conv2=21,conv3=52', '--out', compressedPath]);
    assert.equal(made.code, 0, made.stderr);
    original = await loadModel(CHARCNN);
    compressed = await loadModel(compressedPath);
    browser = await launchChromium(chromium!);
  });
  after(() => browser?.close());

  test('stock tfjs loads the fixture and its compressed version; outputs on wasm and webgl match Node within float tolerance', async () => {
    const server = await startServer(pageHtml(), { before: original, after: compressed });
    const x = tf.randomUniform([5, 24, 24, 1], 0, 1, 'float32', 3);
    try {
      for (const backend of ['wasm', 'webgl']) {
        const context = await openContext(browser, server.origin);
        try {
          const driver = await PageDriver.open(await context.newPage(), server.origin);
          const started = await driver.call('start', backend);
          assert.ok(started.ok, `${backend}: ${JSON.stringify(started)}`);
          await driver.call('load', { before: server.modelUrls.before, after: server.modelUrls.after });
          const out = await driver.call('predict', toBase64(x), x.shape);
          for (const [which, m] of [['before', original], ['after', compressed]] as const) {
            const node = (m.model.predict(x) as tf.Tensor).dataSync();
            const [page] = out[which];
            assert.deepEqual(page.shape, [5, 10]);
            const diff = Math.max(...page.values.map((v, i) => Math.abs(v - node[i])));
            assert.ok(diff < 1e-4, `${backend}, ${which}: largest |browser − Node| ${diff}`);
          }
        } finally {
          await context.close();
        }
      }
    } finally {
      x.dispose();
      await server.close();
    }
  });

  test('the CLI with --data and --json: the Node bench report per backend, agreement as Node counts it; webgpu without a GPU is unavailable, not an error', async () => {
    const data = imageSubset(FASHION_TEST, 2);
    const run = await cli(['bench', CHARCNN, compressedPath, '--browser', '--chromium', chromium!, '--backends', 'wasm,webgpu', '--data', data, '--batch', '1', '--runs', '1', '--warmup', '0', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const r = JSON.parse(run.stdout);
    assert.deepEqual(Object.keys(r), ['browser']);
    assert.match(r.browser.version, /^\d+\.\d+/);
    const [wasm, webgpu] = r.browser.backends;
    for (const key of ['backend', 'before', 'after', 'theoreticalSpeedup', 'batches', 'agreement', 'maxAbsDiff', 'meanAbsDiff', 'accuracyDelta', 'detail', 'nodeMaxAbsDiff']) assert.ok(key in wasm, key);
    assert.equal(wasm.backend, 'wasm');
    assert.ok(wasm.nodeMaxAbsDiff < 1e-4, String(wasm.nodeMaxAbsDiff));
    const here = await compareOnImages(original.model, compressed.model, listImages(data).entries, DEFAULT_PIXELS, 64, { skipped: [], decoded: 0 });
    assert.equal(wasm.examples, 20);
    assert.equal(wasm.randomInputs, false);
    assert.ok(Math.abs(wasm.agreement - here.agreement) <= 1 / 20, `${wasm.agreement} vs ${here.agreement}`);
    assert.ok(Math.abs(wasm.maxAbsDiff - here.maxAbsDiff) < 1e-4);
    assert.equal(wasm.before.accuracy, here.accuracyBefore);
    const [t] = wasm.batches;
    assert.equal(t.batch, 1);
    assert.ok(t.runs >= 10 && t.before.medianMs > 0 && t.after.medianMs > 0 && t.speedup > 0, JSON.stringify(t));
    assert.equal(webgpu.backend, 'webgpu');
    if ('unavailable' in webgpu) assert.ok(webgpu.unavailable.length > 0);
    else assert.equal(webgpu.batches.length, 1);
  });
});
