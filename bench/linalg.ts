// Linear-algebra benchmark at VGG16 scale: every 3×3 conv kernel of VGG16 reshaped to the
// scheme-2 matrix (C·3)×(3·N), filled with seeded Gaussian weights (He scale), then
//   - truncatedSvd at k = ⌊min(m,n)/4⌋, with ‖A − UΣVᵀ‖_F compared to the Eckart–Young optimum;
//   - spectrum (all σ²).
// Run: `npx tsc -p . && node dist/bench/linalg.js` (or import runLinalgBench()).
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { fileURLToPath } from 'node:url';
import { spectrum, truncatedSvd, type SvdDiagnostics } from '../src/linalg/svd.js';
import { xoshiro128plus } from '../src/runtime/random.js';

interface Layer {
  name: string;
  C: number;
  N: number;
}

const VGG16_CONVS: Layer[] = [
  { name: 'conv1_1', C: 3, N: 64 },
  { name: 'conv1_2', C: 64, N: 64 },
  { name: 'conv2_1', C: 64, N: 128 },
  { name: 'conv2_2', C: 128, N: 128 },
  { name: 'conv3_1', C: 128, N: 256 },
  { name: 'conv3_2', C: 256, N: 256 },
  { name: 'conv3_3', C: 256, N: 256 },
  { name: 'conv4_1', C: 256, N: 512 },
  { name: 'conv4_2', C: 512, N: 512 },
  { name: 'conv4_3', C: 512, N: 512 },
  { name: 'conv5_1', C: 512, N: 512 },
  { name: 'conv5_2', C: 512, N: 512 },
  { name: 'conv5_3', C: 512, N: 512 },
];

/** ‖A − U·diag(s)·Vᵀ‖_F (products on the backend, sum in float64). */
function residualNorm(a: Float32Array, m: number, n: number, u: Float32Array, s: Float64Array, v: Float32Array, k: number): number {
  const vt = new Float32Array(k * n);
  for (let j = 0; j < n; j++) for (let c = 0; c < k; c++) vt[c * n + j] = v[j * k + c];
  const us = new Float32Array(m * k);
  for (let i = 0; i < m; i++) for (let c = 0; c < k; c++) us[i * k + c] = u[i * k + c] * s[c];
  const r = tf.tidy(() => tf.sub(tf.tensor2d(a, [m, n]), tf.matMul(tf.tensor2d(us, [m, k]), tf.tensor2d(vt, [k, n]))));
  const d = r.dataSync();
  r.dispose();
  let acc = 0;
  for (let i = 0; i < d.length; i++) acc += d[i] * d[i];
  return Math.sqrt(acc);
}

/** CPU time (user + system) of this process since `start`, in ms: insensitive to other load. */
function cpuMs(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

function pad(x: string | number, w: number): string {
  return String(x).padStart(w);
}

export async function runLinalgBench(): Promise<void> {
  if (tf.getBackend() !== 'wasm') {
    await tf.setBackend('wasm');
    await tf.ready();
  }
  console.log(`linalg bench — backend ${tf.getBackend()}, VGG16 3×3 convs as (C·3)×(3·N), Gaussian weights, k = ⌊min/4⌋`);
  console.log(
    [pad('layer', 8), pad('m×n', 10), pad('k', 4), pad('svd ms', 8), pad('(cpu)', 7), pad('path', 22), pad('err/EY−1', 10), pad('σ²s ms', 8), pad('(cpu)', 7)].join(' '),
  );
  const rng = xoshiro128plus(2024);
  const info = {} as SvdDiagnostics;
  let svdTotal = 0;
  let sqTotal = 0;
  let svdCpu = 0;
  let sqCpu = 0;
  const tensorsBefore = tf.memory().numTensors;
  for (const layer of VGG16_CONVS) {
    const m = layer.C * 3;
    const n = 3 * layer.N;
    const std = Math.sqrt(2 / (9 * layer.C));
    const a = new Float32Array(m * n);
    for (let i = 0; i < a.length; i++) a[i] = rng.gaussian() * std;
    const k = Math.max(1, Math.floor(Math.min(m, n) / 4));

    let t0 = performance.now();
    let c0 = process.cpuUsage();
    const sq = spectrum(a, m, n);
    const tSq = performance.now() - t0;
    const cSq = cpuMs(c0);
    sqTotal += tSq;
    sqCpu += cSq;

    t0 = performance.now();
    c0 = process.cpuUsage();
    const { u, s, v } = truncatedSvd(a, m, n, k, info);
    const tSvd = performance.now() - t0;
    const cSvd = cpuMs(c0);
    svdTotal += tSvd;
    svdCpu += cSvd;
    const path =
      info.path === 'dense' ? 'dense' : `ℓ=${info.block} it=${info.subspaceIterations} G·Q×${info.products}${info.polishSweeps ? ` +${info.polishSweeps}sw` : ''}`;

    // Eckart–Young reference from the full spectrum just computed (float32 Gram: σ² to ~1e-7·σ₁²,
    // i.e. the reference error is good to ~1e-6 relative here).
    let tail = 0;
    for (let i = k; i < sq.length; i++) tail += sq[i];
    const ey = Math.sqrt(tail);
    const err = residualNorm(a, m, n, u, s, v, k);
    const excess = ey > 0 ? (err - ey) / ey : err;
    console.log(
      [
        pad(layer.name, 8),
        pad(`${m}×${n}`, 10),
        pad(k, 4),
        pad(tSvd.toFixed(0), 8),
        pad(cSvd.toFixed(0), 7),
        pad(path, 22),
        pad(excess.toExponential(2), 10),
        pad(tSq.toFixed(0), 8),
        pad(cSq.toFixed(0), 7),
      ].join(' '),
    );
  }
  const leaked = tf.memory().numTensors - tensorsBefore;
  console.log(
    `total truncatedSvd ${(svdTotal / 1000).toFixed(2)} s (cpu ${(svdCpu / 1000).toFixed(2)} s), ` +
      `spectrum ${(sqTotal / 1000).toFixed(2)} s (cpu ${(sqCpu / 1000).toFixed(2)} s)`,
  );
  console.log(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB, tensors leaked ${leaked}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  runLinalgBench().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
