import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
await tf.setBackend('wasm'); await tf.ready();
function time(name, f, macs, reps=5) {
  f().dispose?.();
  const t0 = performance.now();
  for (let i=0;i<reps;i++){ const r=f(); r.dataSync(); r.dispose(); }
  const ms=(performance.now()-t0)/reps;
  console.log(name, ms.toFixed(2),'ms', (macs/ms/1e6).toFixed(2),'GMAC/s');
}
const P = tf.randomNormal([48, 2048, 81]); const S = tf.randomNormal([48, 81, 4]);
time('batched 48x(2048x81x4)', ()=>tf.matMul(P,S), 48*2048*81*4);
const S16 = tf.randomNormal([48, 81, 16]);
time('batched 48x(2048x81x16)', ()=>tf.matMul(P,S16), 48*2048*81*16);
const Pt = tf.randomNormal([48, 81, 2048]); const dU = tf.randomNormal([48, 2048, 4]);
time('batched 48x(81x2048x4)', ()=>tf.matMul(Pt,dU), 48*2048*81*4);
const P2 = tf.randomNormal([2048, 81*48]);
time('transpose 2048x81x48 -> 48,2048,81', ()=>P2.reshape([2048,81,48]).transpose([2,0,1]), 0);
const x = tf.randomNormal([32,16,16,48]); const dw = tf.randomNormal([9,9,48,4]);
time('depthwise conv fwd', ()=>tf.depthwiseConv2d(x,dw,1,'valid'), 32*64*48*4*81);
const x2 = tf.randomNormal([32,16,16,48]);
time('slice+concat 81 patches', ()=>tf.tidy(()=>{const parts=[]; for(let i=0;i<9;i++)for(let j=0;j<9;j++)parts.push(x2.slice([0,i,j,0],[32,8,8,48])); return tf.concat(parts,3);}), 0);
time('vpatch 9 slices', ()=>tf.tidy(()=>{const parts=[]; for(let i=0;i<9;i++)parts.push(x2.slice([0,i,0,0],[32,8,16,48])); return tf.concat(parts,3);}), 0);
