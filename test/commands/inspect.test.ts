import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { useBackend } from '../../src/runtime/backend.js';
import { saveModel } from '../../src/model/io.js';
import { CHARCNN, NESTED, RESIDUAL, cli, runCli, teachableModel, tempDir, type CliRun } from '../helpers.js';

before(async () => {
  await useBackend('wasm');
});

describe('inspect', () => {
  // One table (in a fresh process, as a user runs it) and one --json report of charcnn, shared.
  let table: CliRun;
  let report: any;
  before(async () => {
    table = runCli(['inspect', CHARCNN]);
    const run = await cli(['inspect', CHARCNN, '--json']);
    assert.equal(run.code, 0, run.stderr);
    report = JSON.parse(run.stdout);
  });

  test('the charcnn table: conv2 carries most of the MACs', () => {
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /conv2\s+Conv2D\s+9×9\s+48→128\s+1,1\s+8×8×128\s+31\.85M\s+9\d\.\d%/);
    assert.match(table.stdout, /total\s+33\.90M\s+100%/);
    assert.match(table.stdout, /Scheme 2 ranks/);
    assert.match(table.stdout, /Channel scheme ranks[^\n]*\n[^\n]*\n[^\n]*\nconv4\s+10\s+9\s/);
    assert.match(table.stdout, /MACs no scheme can replace: 0\.0%/);
    assert.match(table.stderr, /tfjs backend (wasm|tensorflow)/);
  });

  test('--json keeps the interface fields and exact MACs', () => {
    const r = report;
    for (const key of ['backend', 'model', 'totalMacs', 'totalParams', 'layers']) assert.ok(key in r, key);
    const conv2 = r.layers.find((l: any) => l.name === 'conv2');
    assert.deepEqual(
      { kernelSize: conv2.kernelSize, inChannels: conv2.inChannels, outChannels: conv2.outChannels, strides: conv2.strides, outputShape: conv2.outputShape, macs: conv2.macs, params: conv2.params },
      { kernelSize: [9, 9], inChannels: 48, outChannels: 128, strides: [1, 1], outputShape: [8, 8, 128], macs: 8 * 8 * 128 * 81 * 48, params: 81 * 48 * 128 + 128 },
    );
    assert.equal(r.totalMacs, r.layers.reduce((a: number, l: any) => a + (l.macs ?? 0), 0));
    assert.ok(Math.abs(r.layers.reduce((a: number, l: any) => a + l.macShare, 0) - 1) < 1e-9);
    const s2 = conv2.scheme2;
    assert.equal(s2.fullRank, 432);
    assert.ok(s2.breakEvenRank > 0 && s2.breakEvenRank < 432);
    const e = s2.energyRanks;
    assert.ok(1 <= e['0.9'] && e['0.9'] <= e['0.95'] && e['0.95'] <= e['0.99'] && e['0.99'] <= 432);
    assert.equal(r.layers.find((l: any) => l.name === 'conv4').scheme2, null, '1×1 convs have no Scheme 2 summary');
    const conv4 = r.layers.find((l: any) => l.name === 'conv4');
    assert.deepEqual([conv4.channel.fullRank, conv4.channel.breakEvenRank], [10, 9], '128→10: K·138 < 1280 up to K = 9');
    assert.ok(conv4.replaceable && !conv4.defaultCandidate, 'conv4 makes the outputs: replaceable, not picked by default');
    assert.equal(conv2.channel, null);
    assert.deepEqual(r.unreplaceable, { share: 0, byClass: {} });
  });

  test('a Teachable-Machine-shaped model: channel ranks for 1×1 convs and Dense layers; the depthwise conv shown as no scheme can replace', async () => {
    const dir = tempDir();
    await saveModel(teachableModel(), path.join(dir, 'tm'));
    const run = await cli(['inspect', path.join(dir, 'tm'), '--json']);
    assert.equal(run.code, 0, run.stderr);
    const r = JSON.parse(run.stdout);
    assert.deepEqual(r.layers.filter((l: any) => l.channel).map((l: any) => [l.name, l.channel.fullRank]), [['expand', 8], ['project', 12], ['last_conv', 12], ['head_dense', 20], ['head_out', 3]]);
    const dw = r.layers.find((l: any) => l.name === 'dw');
    assert.equal(dw.replaceable, false);
    assert.deepEqual(r.unreplaceable, { share: dw.macShare, byClass: { DepthwiseConv2D: dw.macShare } });
    const text = (await cli(['inspect', path.join(dir, 'tm')])).stdout;
    assert.match(text, /Channel scheme ranks/);
    assert.match(text, new RegExp(`MACs no scheme can replace: ${(dw.macShare * 100).toFixed(1)}% \\(DepthwiseConv2D ${(dw.macShare * 100).toFixed(1)}%\\)`));
    assert.match(text, /left out without --layers \(first conv, last layer\): stem [\d.]+%, head_out [\d.]+%/);
  });

  test('"how fast can this get": the maximum by MACs and ranks that reach each whole-model target', () => {
    const r = report;
    assert.deepEqual(r.reach.layers, ['conv2', 'conv3']);
    // Independently: conv2 and conv3 at rank 1 (scheme 2 MACs K·(C·kh·W_in + N·kw·W_out)·H_out).
    const conv2 = 8 * (16 * 9 * 48 + 8 * 9 * 128);
    const conv3 = 1 * (8 * 8 * 128 + 1 * 8 * 128);
    const other = r.totalMacs - r.layers.filter((l: any) => ['conv2', 'conv3'].includes(l.name)).reduce((a: number, l: any) => a + l.macs, 0);
    assert.ok(Math.abs(r.reach.maxSpeedup - r.totalMacs / (other + conv2 + conv3)) < 1e-9, `${r.reach.maxSpeedup}`);
    assert.match(r.reach.heldBack, /first conv/);
    assert.deepEqual(r.reach.targets.map((t: any) => t.target), [2, 4, 8]);
    for (const t of r.reach.targets) assert.ok(t.theoreticalSpeedup >= t.target && t.theoreticalSpeedup < t.target * 1.1, JSON.stringify(t));
    assert.match(table.stdout, /How fast can this get\? Replacing conv2, conv3: at most 29\.\d\d× by MACs/);
  });

  test('functional and nested models are listed layer by layer under the inner names', async () => {
    const residual = JSON.parse((await cli(['inspect', RESIDUAL, '--json'])).stdout);
    assert.ok(['stem', 'branch_a', 'branch_b', 'add', 'down', 'side', 'gap', 'logits'].every((n) => residual.layers.some((l: any) => l.name === n)));
    const nested = JSON.parse((await cli(['inspect', NESTED, '--json'])).stdout);
    assert.deepEqual(nested.layers.map((l: any) => l.name), ['bb_conv1', 'bb_conv2', 'bb_gap', 'head']);
  });
});
