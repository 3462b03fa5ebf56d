import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
await tf.setBackend('wasm'); await tf.ready();
function time(name, f, reps=5) {
  tf.dispose(f());
  const t0 = performance.now();
  for (let i=0;i<reps;i++){ const r=f(); (Array.isArray(r)?r:[r]).forEach(t=>t.dataSync()); tf.dispose(r); }
  const ms=(performance.now()-t0)/reps;
  console.log(name, ms.toFixed(2),'ms');
  return ms;
}
const B=32, K=21;
const X = tf.randomNormal([B,16,16,48]);
const V = tf.randomNormal([9,1,48,K]);
const H = tf.randomNormal([1,9,K,128]);
const Y = tf.randomNormal([B,8,8,128]);
const Z = tf.conv2d(X,V,1,'valid');
const E = tf.sub(tf.conv2d(Z,H,1,'valid'), Y);
time('conv3d fwd Z', ()=>tf.conv3d(X.reshape([B,1,16,16,48]), V.reshape([1,9,1,48,K]), 1, 'valid'));
const g = tf.grads((x,w)=>tf.conv3d(x,w,1,'valid'));
time('conv3d grads (X,V) with dy', ()=>g([X.reshape([B,1,16,16,48]), V.reshape([1,9,1,48,K])], tf.randomNormal([B,1,8,16,K])));
time('dZ conv flipped', ()=>tf.tidy(()=>{
  const Ep = tf.pad(E, [[0,0],[0,0],[8,8],[0,0]]);
  const G = tf.reverse(H, 1).transpose([0,1,3,2]); // [1,9,128,K]
  return tf.conv2d(Ep, G, 1, 'valid');
}));
time('dH trick', ()=>tf.tidy(()=>{
  const Zt = Z.transpose([3,1,2,0]); // (K,8,16,B)
  const Et = E.transpose([1,2,0,3]); // (8,8,B,N)
  return tf.conv2d(Zt, Et, 1, 'valid'); // (K,1,9,N)
}));
time('dH patches', ()=>tf.tidy(()=>{
  const Zf = Z.reshape([B*8, 16*K]);
  const parts=[]; for(let j=0;j<9;j++) parts.push(Zf.slice([0,j*K],[B*8,8*K]).reshape([B*64,K]));
  const Q = tf.concat(parts,1);
  return tf.matMul(Q.transpose(), E.reshape([B*64,128]));
}));
// Scheme 1 pieces
const M=4;
const S = tf.randomNormal([9,9,48,M]);
time('s1 depthwise fwd', ()=>tf.depthwiseConv2d(X,S,1,'valid'));
const U = tf.depthwiseConv2d(X,S,1,'valid');
const dU = tf.randomNormal(U.shape);
time('s1 dS trick', ()=>tf.tidy(()=>{
  const Xt = X.transpose([1,2,0,3]).reshape([1,16,16,B*48]);
  const F = dU.reshape([B,8,8,48,M]).transpose([1,2,0,3,4]).reshape([8,8,B*48,M]);
  return tf.depthwiseConv2d(Xt, F, 1, 'valid').reshape([9,9,B,48,M]).sum(2);
}));
const gd = tf.grads((x,w)=>tf.conv3d(x,w,1,'valid'));
