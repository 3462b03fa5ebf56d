/**
 * A scheme for tests only: it "replaces" a Conv2D by a copy of itself (one factor, the kernel as it
 * is; rank 1 is full rank). It shows that a new scheme is this one file plus one registry line
 * (`registerScheme(IDENTITY)`, or a line in src/schemes/index.ts): nothing outside src/schemes
 * needs to know it, and compress runs it end to end.
 */
import type * as tf from '@tensorflow/tfjs';
import { linearResponse } from '../../src/linalg/conv-ops.js';
import { conv2dMacs, type ConvGeometry } from '../../src/model/cost.js';
import { isSpatialConv } from '../../src/model/layers.js';
import type { SchemeRegistration } from '../../src/schemes/index.js';
import { activationOf, biasWeights, conv2dLayer } from '../../src/schemes/layers.js';
import type { ClosedFormFit, FactoredForm, Scheme, TargetLayer } from '../../src/schemes/scheme.js';

const notIterative = (): never => {
  throw new Error('the identity scheme fits in closed form only');
};

/** The factored form: the layer's own convolution of its one factor; its data fit keeps the kernel. */
class IdentityForm implements FactoredForm {
  readonly g: ConvGeometry;
  readonly macsPerImage: number;
  readonly priorMacs = 0;
  readonly last = 0;
  readonly lastFanIn: number;

  constructor(target: TargetLayer) {
    this.g = target.geometry;
    this.macsPerImage = conv2dMacs(this.g);
    this.lastFanIn = this.g.kh * this.g.kw * this.g.C;
  }

  forward(x: tf.Tensor4D, f: tf.Tensor[]): tf.Tensor2D {
    return linearResponse(x, f[0] as tf.Tensor4D, this.g);
  }

  closedForm(): ClosedFormFit {
    const N = this.g.N;
    return { add() {}, solve: (start, hasBias) => ({ factors: start, offset: hasBias ? new Float32Array(N) : null }) };
  }

  step = notIterative;
  design = notIterative;
  filterObjective = notIterative;
  filterNormal = notIterative;
  dispose(): void {}
}

export const identity: Scheme = {
  id: 'identity',
  recipe: { scheme: 'identity', basis: 'per-channel', separable: false },
  label: 'identity (a copy of the layer)',
  pieceSuffixes: [],
  refuses: (layer) => (layer.className === 'Conv2D' ? null : `it is a ${layer.className}; the identity scheme copies Conv2D layers`),
  fullRank: () => 1,
  macs: (g) => conv2dMacs(g),
  params: (g) => g.kh * g.kw * g.C * g.N + (g.useBias ? g.N : 0),
  errorCurve: () => Float64Array.from([1, 0]),
  factorize: (target, rank) => ({
    target, scheme: identity, rank, bias: target.bias,
    factors: [{ shape: [target.geometry.kh, target.geometry.kw, target.geometry.C, target.geometry.N], values: target.kernel }],
  }),
  kernelOf: (_target, factors) => factors[0].values,
  layers: ({ target, factors, bias }) => {
    const g = target.geometry;
    const base = target.config;
    return [conv2dLayer(base, target.name, g.N, [g.kh, g.kw], [g.sh, g.sw], [g.dh, g.dw], g.useBias, activationOf(base), [factors[0], ...biasWeights(bias, g)])];
  },
  factored: (target) => new IdentityForm(target),
};

export const IDENTITY: SchemeRegistration = {
  name: 'identity',
  help: 'tests only: the layer itself',
  create: () => identity,
  madeFor: isSpatialConv,
  byDefault: { rule: () => 'no layer by default', picks: () => false },
  variants: [{ title: 'identity (test only)', basis: 'per-channel', separable: false }],
};
