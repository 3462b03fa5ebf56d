/**
 * A Teachable-Machine-shaped image model with real weights, built at benchmark time into a folder
 * outside the project: nsfwjs' MobileNetV2 (224 px) truncated at `out_relu` as Teachable Machine
 * truncates its MobileNetV2, made to take Teachable Machine's [-1, 1] pixels, and a head trained on
 * two classes of labelled photos. The nesting and the head are those of @teachablemachine/image
 * 0.8.5 (loadTruncatedMobileNet and TeachableMobileNet.train):
 *
 *   Sequential [ Sequential [ functional base, GlobalAveragePooling2D ],
 *                Sequential [ Dense(100, relu), Dense(classes, softmax, no bias) ] ]
 *
 * trained with Adam (learning rate 0.001), 50 epochs, batch 16, on 1280-d features computed once,
 * and saved with saveModel plus a metadata.json carrying the fields that library writes. Given a
 * Teachable Machine export, the base is that export's own (MobileNetV2 width 0.35) instead, and
 * the model is the one Teachable Machine would make from the same photos.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { METADATA_FILE } from '../src/data/metadata.js';
import { imageBatches, type BatchStats, type ImageEntry, type InputSize, type PixelOptions } from '../src/data/images.js';
import { loadModel, saveModel } from '../src/model/io.js';
import { DEFAULT_THREADS, useBackend } from '../src/runtime/backend.js';
import { mulberry32 } from '../src/runtime/random.js';

/** Teachable Machine's pixels as the benchmark's command gives them: `--scale 2/255 --offset -1`. */
export const TEACHABLE_FLAGS = ['--scale', '2/255', '--offset', '-1'];
const TEACHABLE_PIXELS: PixelOptions = { scale: 2 / 255, offset: -1, standardize: false, resize: 'sharp' };
/** What nsfwjs' base was trained on: pixels in [0, 1]. */
const BASE_PIXELS: PixelOptions = { scale: 1 / 255, offset: 0, standardize: false, resize: 'sharp' };
const SIZE: InputSize = { height: 224, width: 224, channels: 3 };
/** Where Teachable Machine cuts MobileNetV2 (custom-mobilenet.ts, DEFAULT_TRAINING_LAYER_V2). */
const TRUNCATE_AT = 'out_relu';
/** Teachable Machine's default training settings (its web app's defaults; TrainingParameters). */
const TRAINING = { denseUnits: 100, epochs: 50, learningRate: 0.001, batchSize: 16 };
const BATCH = 16;

/** The classes of a labelled image set and its images, each with its class index. */
export interface LabelledSplit {
  classes: string[];
  /** Images the head is trained on. */
  train: ImageEntry[];
  /** Images neither the head nor the fit sees: accuracy and agreement are measured on them. */
  other: ImageEntry[];
}

/** How far the [-1, 1] base strays from the original fed [0, 1] pixels, on the other images. */
export interface BorderEffect {
  images: number;
  /** ‖Δ‖ / ‖original‖ of the 7×7×1280 `out_relu` map, mean over images, on its 6×6 interior and on its last row and column. */
  interior: number;
  border: number;
  /** The same on the pooled 1280-d features the head sees: mean and worst image. */
  pooledMean: number;
  pooledMax: number;
  /** Images on which the head's top-1 changes between the two. */
  decisionsChanged: number;
  /** Accuracy on the other images of the same head trained on the original base's features instead. */
  originalOtherAccuracy: number;
}

export interface TeachableReport {
  classes: string[];
  trainImages: number;
  otherImages: number;
  trainAccuracy: number;
  otherAccuracy: number;
  /** With nsfwjs' base: what folding the pixel range into it changed. Null on a Teachable Machine export's own base. */
  border: BorderEffect | null;
}

/**
 * Images grouped by the name of the folder holding them, so that both `<class>/` and
 * `<split>/<class>/` layouts (CIFAR-10's train/airplane and test/airplane) name classes; images at
 * the top of `root` have no class.
 */
export function filesByClass(root: string, files: string[]): Map<string, string[]> {
  const byClass = new Map<string, string[]>();
  for (const file of files) {
    const folder = path.dirname(file);
    if (path.resolve(folder) === path.resolve(root)) continue;
    const name = path.basename(folder);
    byClass.set(name, [...(byClass.get(name) ?? []), file]);
  }
  return byClass;
}

/**
 * `perClass.train + perClass.other` images of each chosen class by a seeded shuffle (the first
 * ones train the head, the rest are the other images).
 */
export function labelledSplit(byClass: Map<string, string[]>, classes: string[], perClass: { train: number; other: number }): LabelledSplit {
  const split: LabelledSplit = { classes, train: [], other: [] };
  classes.forEach((name, label) => {
    const files = byClass.get(name);
    if (!files) throw new Error(`--classes: no folder of images named '${name}'; have ${[...byClass.keys()].sort().join(', ')}`);
    const need = perClass.train + perClass.other;
    if (files.length < need) throw new Error(`class '${name}': ${files.length} images; this case needs ${need}`);
    const order = mulberry32(11 + label).shuffle([...files].sort());
    split.train.push(...order.slice(0, perClass.train).map((file) => ({ file, label })));
    split.other.push(...order.slice(perClass.train, need).map((file) => ({ file, label })));
  });
  return split;
}

/**
 * Makes a base fed [-1, 1] pixels compute what it computed on [0, 1] ones: x01 = (x11 + 1) / 2
 * folded into the first convolution (kernel / 2, and Σ kernel / 2 per output channel added to its
 * bias or, without one, taken off the following batch norm's moving mean). Exact wherever the
 * convolution sees only pixels; where it sees the zero padding in front of it (MobileNetV2's
 * Conv1_pad: one row and column at the bottom and right), that zero now stands for 0.5 instead of 0,
 * so the base sees a grey line there. `borderEffect` measures what that changes.
 */
export function foldPixelRange(base: tf.LayersModel): void {
  const conv = base.layers.find((l) => l.getClassName() === 'Conv2D');
  if (!conv) throw new Error('the base has no Conv2D to fold the pixel range into');
  const [kernel, ...rest] = conv.getWeights();
  const shift = tf.tidy(() => kernel.sum([0, 1, 2]).mul(0.5));
  const halved = tf.tidy(() => kernel.mul(0.5));
  if (rest.length) {
    conv.setWeights([halved, tf.tidy(() => rest[0].add(shift))]);
  } else {
    const next = base.layers.filter((l) => l.inboundNodes.some((n) => n.inboundLayers.includes(conv)));
    if (next.length !== 1 || next[0].getClassName() !== 'BatchNormalization') throw new Error(`${conv.name} has no bias and no batch norm of its own to fold the pixel range into`);
    const norm = next[0];
    const weights = norm.getWeights();
    const mean = norm.weights.findIndex((w) => w.originalName.endsWith('/moving_mean'));
    weights[mean] = tf.tidy(() => weights[mean].sub(shift));
    conv.setWeights([halved]);
    norm.setWeights(weights);
  }
  tf.dispose([shift, halved]);
}

/** Runs `fn` on each decoded batch of `entries`. */
async function forBatches(entries: ImageEntry[], pixels: PixelOptions, fn: (x: tf.Tensor4D, start: number) => void): Promise<void> {
  const stats: BatchStats = { skipped: [], decoded: 0 };
  let start = 0;
  for await (const batch of imageBatches(entries, SIZE, BATCH, pixels, stats)) {
    fn(batch.x, start);
    start += batch.x.shape[0];
    batch.x.dispose();
  }
  if (stats.skipped.length) throw new Error(`${stats.skipped.length} images could not be read, e.g. ${stats.skipped[0]}`);
}

/** The pooled 1280-d features of `entries` (the truncated model's output, as the head sees it). */
async function pooledFeatures(base: tf.LayersModel, entries: ImageEntry[], pixels: PixelOptions): Promise<tf.Tensor2D> {
  const parts: tf.Tensor2D[] = [];
  await forBatches(entries, pixels, (x) => parts.push(tf.tidy(() => (base.predict(x) as tf.Tensor4D).mean([1, 2]))));
  const all = tf.concat(parts);
  tf.dispose(parts);
  return all;
}

/** Per image ‖a − b‖ / ‖b‖ over the axes after the first. */
function relativeErrors(a: tf.Tensor, b: tf.Tensor): number[] {
  return tf.tidy(() => {
    const axes = a.shape.slice(1).map((_, i) => i + 1);
    return Array.from(a.sub(b).square().sum(axes).div(b.square().sum(axes)).sqrt().dataSync());
  });
}

const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;

/** The folded base fed [-1, 1] pixels against the original base fed [0, 1] pixels of the same images. */
async function borderEffect(original: tf.LayersModel, folded: tf.LayersModel, head: tf.LayersModel, entries: ImageEntry[]): Promise<Omit<BorderEffect, 'originalOtherAccuracy'>> {
  const ours: tf.Tensor4D[] = [];
  await forBatches(entries, TEACHABLE_PIXELS, (x) => ours.push(folded.predict(x) as tf.Tensor4D));
  const interior: number[] = [];
  const border: number[] = [];
  const pooled: number[] = [];
  let changed = 0;
  let batch = 0;
  await forBatches(entries, BASE_PIXELS, (x) => {
    const mine = ours[batch++];
    tf.tidy(() => {
      const theirs = original.predict(x) as tf.Tensor4D;
      const [, h, w, c] = theirs.shape;
      const inner = (t: tf.Tensor4D) => t.slice([0, 0, 0, 0], [-1, h - 1, w - 1, c]);
      interior.push(...relativeErrors(inner(mine), inner(theirs)));
      // The last row and column: what is left of the map once its interior is zeroed.
      const edge = (t: tf.Tensor4D) => t.sub(inner(t).pad([[0, 0], [0, 1], [0, 1], [0, 0]]));
      border.push(...relativeErrors(edge(mine), edge(theirs)));
      const [a, b] = [mine.mean([1, 2]), theirs.mean([1, 2])];
      pooled.push(...relativeErrors(a, b));
      const [pa, pb] = [(head.predict(a) as tf.Tensor).argMax(1).dataSync(), (head.predict(b) as tf.Tensor).argMax(1).dataSync()];
      changed += pa.filter((v, i) => v !== pb[i]).length;
    });
  });
  tf.dispose(ours);
  return { images: entries.length, interior: mean(interior), border: mean(border), pooledMean: mean(pooled), pooledMax: Math.max(...pooled), decisionsChanged: changed };
}

/** Top-1 accuracy of `head` on `features` against the entries' labels. */
function accuracy(head: tf.LayersModel, features: tf.Tensor2D, entries: ImageEntry[]): number {
  const top = tf.tidy(() => (head.predict(features) as tf.Tensor).argMax(1).dataSync());
  return entries.filter((e, i) => e.label === top[i]).length / entries.length;
}

/** Teachable Machine's head, trained as TeachableMobileNet.train does on features shuffled once. */
async function trainHead(features: tf.Tensor2D, entries: ImageEntry[], classes: number): Promise<tf.Sequential> {
  const order = mulberry32(5).shuffle(entries.map((_, i) => i));
  const init = () => tf.initializers.varianceScaling({ seed: 3.14 });
  const head = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [features.shape[1]], units: TRAINING.denseUnits, activation: 'relu', kernelInitializer: init(), useBias: true }),
      tf.layers.dense({ kernelInitializer: init(), useBias: false, activation: 'softmax', units: classes }),
    ],
  });
  const optimizer = tf.train.adam(TRAINING.learningRate);
  head.compile({ optimizer, loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  const x = tf.gather(features, order);
  const y = tf.oneHot(order.map((i) => entries[i].label!), classes).toFloat();
  await head.fit(x, y, { epochs: TRAINING.epochs, batchSize: TRAINING.batchSize, shuffle: false, verbose: 0 });
  tf.dispose([x, y]);
  optimizer.dispose();
  return head;
}

/** A metadata.json with the fields @teachablemachine/image writes (fillMetadata). */
function teachableMetadata(labels: string[]): Record<string, unknown> {
  return {
    tfjsVersion: tf.version.tfjs,
    tmVersion: '2.4.10',
    packageVersion: '0.8.5',
    packageName: '@teachablemachine/image',
    timeStamp: new Date().toISOString(),
    userMetadata: {},
    modelName: 'tm-my-image-model',
    labels,
    imageSize: SIZE.width,
  };
}

/** Teachable Machine's nesting of `base` and `head`, saved into `dir` (replaced) with a metadata.json. */
async function saveTeachable(base: tf.LayersModel, head: tf.Sequential, dir: string, classes: string[]): Promise<void> {
  // Teachable Machine's truncated model: the base, then pooling to the 1280 features.
  const truncated = tf.sequential({ layers: [base, tf.layers.globalAveragePooling2d({})] });
  const model = tf.sequential();
  model.add(truncated);
  model.add(head);
  fs.rmSync(dir, { recursive: true, force: true });
  await saveModel(model, dir);
  fs.writeFileSync(path.join(dir, METADATA_FILE), JSON.stringify(teachableMetadata(classes)));
}

/**
 * Builds the model into `dir` (replaced) from nsfwjs' MobileNetV2 at `mobilenetJson` and returns
 * the head's accuracies and the border effect of the pixel-range fold.
 */
export async function buildTeachableModel(mobilenetJson: string, dir: string, split: LabelledSplit): Promise<TeachableReport> {
  await useBackend('wasm', DEFAULT_THREADS);
  const cut = (m: tf.LayersModel, name: string) => tf.model({ inputs: m.inputs, outputs: m.getLayer(TRUNCATE_AT).output, name });
  const originalBase = cut((await loadModel(mobilenetJson)).model, 'original');
  const base = cut((await loadModel(mobilenetJson)).model, 'mobilenetv2_1.00_224');
  foldPixelRange(base);

  const { head, report } = await headOn(base, split);
  // The same head on the original base's features: what the border effect costs in accuracy.
  const originalTrain = await pooledFeatures(originalBase, split.train, BASE_PIXELS);
  const originalOther = await pooledFeatures(originalBase, split.other, BASE_PIXELS);
  const originalHead = await trainHead(originalTrain, split.train, split.classes.length);
  const border = { ...(await borderEffect(originalBase, base, head, split.other)), originalOtherAccuracy: accuracy(originalHead, originalOther, split.other) };
  tf.dispose([originalTrain, originalOther]);
  originalHead.dispose();
  await saveTeachable(base, head, dir, split.classes);
  return { ...report, border };
}

/** Teachable Machine's head trained on `base`'s pooled features of the training photos, and its accuracies. */
async function headOn(base: tf.LayersModel, split: LabelledSplit): Promise<{ head: tf.Sequential; report: Omit<TeachableReport, 'border'> }> {
  const trainFeatures = await pooledFeatures(base, split.train, TEACHABLE_PIXELS);
  const otherFeatures = await pooledFeatures(base, split.other, TEACHABLE_PIXELS);
  const head = await trainHead(trainFeatures, split.train, split.classes.length);
  const report = {
    classes: split.classes,
    trainImages: split.train.length,
    otherImages: split.other.length,
    trainAccuracy: accuracy(head, trainFeatures, split.train),
    otherAccuracy: accuracy(head, otherFeatures, split.other),
  };
  tf.dispose([trainFeatures, otherFeatures]);
  return { head, report };
}

/**
 * The functional MobileNetV2 inside a Teachable Machine image export (`<export>/model.json`): the
 * first layer of the export's first Sequential. Every export carries the same base (MobileNetV2
 * width 0.35, ImageNet weights, cut at `out_relu`, fed [-1, 1]); only the head is the user's.
 */
export async function teachableBase(exportJson: string): Promise<tf.LayersModel> {
  const { model } = await loadModel(exportJson);
  const truncated = model.layers[0] as tf.LayersModel;
  const base = truncated?.layers?.[0] as tf.LayersModel | undefined;
  if (!base?.layers || base.outputs[0].shape.length !== 4) throw new Error(`${exportJson} is not a Teachable Machine image export (Sequential[Sequential[base, pooling], head])`);
  return base;
}

/**
 * Builds the model into `dir` (replaced) on the base of a Teachable Machine export, as that export
 * would be with a head trained on `split`: the model Teachable Machine itself would make from these
 * photos. No pixel-range fold: the base already takes [-1, 1].
 */
export async function buildOnTeachableBase(exportJson: string, dir: string, split: LabelledSplit): Promise<TeachableReport> {
  await useBackend('wasm', DEFAULT_THREADS);
  const base = await teachableBase(exportJson);
  const { head, report } = await headOn(base, split);
  await saveTeachable(base, head, dir, split.classes);
  return { ...report, border: null };
}
