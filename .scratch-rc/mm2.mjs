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
const a = tf.randomNormal([2048, 189]);
time('gram transA', ()=>tf.matMul(a,a,true,false), 2048*189*189);
time('gram explicit T', ()=>tf.tidy(()=>tf.matMul(a.transpose(),a)), 2048*189*189);
const at = a.transpose();
time('gram at*at^T (transB)', ()=>tf.matMul(at,at,false,true), 2048*189*189);
time('transpose only', ()=>a.transpose(), 0);
const y = tf.randomNormal([2048,128]);
time('Q^T Y transA', ()=>tf.matMul(a,y,true,false), 2048*189*128);
time('Q^T Y explicit', ()=>tf.tidy(()=>tf.matMul(a.transpose(),y)), 2048*189*128);
const big = tf.randomNormal([8192, 189]);
time('gram big explicit', ()=>tf.tidy(()=>tf.matMul(big.transpose(),big)), 8192*189*189);
const pv = tf.randomNormal([4096, 432]); const dz = tf.randomNormal([4096,21]);
time('Pv^T dZ explicit', ()=>tf.tidy(()=>tf.matMul(pv.transpose(),dz)), 4096*432*21);
time('Pv^T dZ transA', ()=>tf.matMul(pv,dz,true,false), 4096*432*21);
time('dZ^T Pv', ()=>tf.tidy(()=>tf.matMul(dz.transpose(),pv)), 4096*432*21);
const e = tf.randomNormal([2048,128]); const h = tf.randomNormal([189,128]);
time('E H^T transB', ()=>tf.matMul(e,h,false,true), 2048*189*128);
// depthwise elementwise variant
const P = tf.randomNormal([2048, 81, 48]); const S = tf.randomNormal([81, 48, 4]);
time('dw einsum-like via transpose+batched', ()=>tf.tidy(()=>tf.matMul(P.transpose([2,0,1]), S.transpose([1,0,2]))), 2048*81*48*4);
time('dw via mul+sum per m', ()=>tf.tidy(()=>{ const outs=[]; for(let m=0;m<4;m++){ outs.push(tf.sum(tf.mul(P, S.slice([0,0,m],[81,48,1]).reshape([81,48])),1)); } return tf.stack(outs,2); }), 2048*81*48*4);
