/**
 * A flat, model-ordered view of every layer, descending into models nested inside models
 * (a Teachable Machine export is a Sequential wrapping a functional MobileNet), with the shapes
 * tfjs' own shape inference gave each layer.
 */
import * as tf from '@tensorflow/tfjs';

export type Shape = (number | null)[];

export interface LayerInfo {
  name: string;
  className: string;
  /** The layer's config as tfjs getConfig() gives it (camelCase keys). */
  config: Record<string, any>;
  layer: tf.layers.Layer;
  /** Names of the models enclosing this layer, outermost first (empty for top-level layers). */
  enclosing: string[];
  /** Input and output shapes of each call of the layer (shared layers are called several times). */
  calls: { inputShapes: Shape[]; outputShapes: Shape[] }[];
  params: number;
}

function isModel(layer: tf.layers.Layer): layer is tf.LayersModel {
  return layer instanceof tf.LayersModel;
}

function asShapeList(shapes: Shape | Shape[]): Shape[] {
  return Array.isArray(shapes[0]) ? (shapes as Shape[]) : [shapes as Shape];
}

/** Every non-input layer of `model`, nested models expanded in place, in model order. */
export function listLayers(model: tf.LayersModel, enclosing: string[] = []): LayerInfo[] {
  const out: LayerInfo[] = [];
  for (const layer of model.layers) {
    if (isModel(layer)) {
      out.push(...listLayers(layer, [...enclosing, layer.name]));
      continue;
    }
    const className = layer.getClassName();
    if (className === 'InputLayer') continue;
    // Nodes of a shared layer each carry their own shapes; tfjs' inputShape getter refuses those.
    const nodes = ((layer as any).inboundNodes ?? []) as { inputShapes: Shape | Shape[]; outputShapes: Shape | Shape[] }[];
    out.push({
      name: layer.name,
      className,
      config: layer.getConfig() as Record<string, any>,
      layer,
      enclosing,
      calls: nodes.map((n) => ({ inputShapes: asShapeList(n.inputShapes), outputShapes: asShapeList(n.outputShapes) })),
      params: layer.countParams(),
    });
  }
  return out;
}

/** Layer classes that convolve: the ones inspect lists kernels for and bench times as rows. */
export const CONV_CLASSES = new Set(['Conv2D', 'DepthwiseConv2D', 'SeparableConv2D', 'Conv2DTranspose', 'Conv1D', 'Conv3D']);

/** Kernel height × width from a config's kernel size (tfjs and Keras save an array); null without one. */
function kernelArea(kernelSize: unknown): number | null {
  return Array.isArray(kernelSize) ? kernelSize.reduce((a: number, b: number) => a * b, 1) : null;
}

/**
 * What the schemes tell layers apart by: a Conv2D with a kernel larger than 1×1 ('spatial conv'),
 * a 1×1 Conv2D or a Dense layer ('pointwise'), or neither (null). Takes the class and kernel size
 * so that a saved topology's entries (kernel_size) and live layers (kernelSize) are judged alike.
 */
export function layerKind(className: string, kernelSize: unknown): 'spatial conv' | 'pointwise' | null {
  if (className === 'Dense') return 'pointwise';
  if (className !== 'Conv2D') return null;
  return kernelArea(kernelSize) === 1 ? 'pointwise' : 'spatial conv';
}

export const isSpatialConv = (l: LayerInfo): boolean => layerKind(l.className, l.config.kernelSize) === 'spatial conv';
export const isPointwise = (l: LayerInfo): boolean => layerKind(l.className, l.config.kernelSize) === 'pointwise';
