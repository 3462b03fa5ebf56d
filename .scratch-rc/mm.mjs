import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
await tf.setBackend('wasm'); await tf.ready();
console.log(tf.getBackend(), tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT'), tf.env().getBool('WASM_HAS_SIMD_SUPPORT'));
function time(name, f, macs, reps=5) {
  f().dispose?.();
  const t0 = performance.now();
  for (let i=0;i<reps;i++){ const r=f(); r.dataSync(); r.dispose(); }
  const ms=(performance.now()-t0)/reps;
  console.log(name, ms.toFixed(2),'ms', (macs/ms/1e6).toFixed(2),'GMAC/s');
}
const a = tf.randomNormal([64*32, 189]); const b = tf.randomNormal([189,128]);
time('mm 2048x189x128', ()=>tf.matMul(a,b), 2048*189*128);
const c = tf.randomNormal([4096, 432]); const d = tf.randomNormal([432,21]);
time('mm 4096x432x21', ()=>tf.matMul(c,d), 4096*432*21);
time('gram 189', ()=>tf.matMul(a,a,true,false), 2048*189*189);
const x = tf.randomNormal([32,16,16,48]); const w = tf.randomNormal([9,9,48,128]);
time('conv2 full b32', ()=>tf.conv2d(x,w,1,'valid'), 32*64*128*81*48);
const big = tf.randomNormal([2048,3888]); const wb = tf.randomNormal([3888,128]);
time('mm 2048x3888x128', ()=>tf.matMul(big,wb), 2048*3888*128);
const bb = tf.randomNormal([48, 2048, 81]); const sb = tf.randomNormal([48,81,4]);
time('batched 48x2048x81x4', ()=>tf.matMul(bb,sb), 48*2048*81*4);
