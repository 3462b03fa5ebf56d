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
const B=32;
for (const K of [21, 83]) {
  console.log('K', K);
  const X = tf.randomNormal([B,16,16,48]);
  const V = tf.randomNormal([9,1,48,K]);
  const H = tf.randomNormal([1,9,K,128]);
  const Y = tf.randomNormal([B,8,8,128]);
  time('Z=conv(X,V)', ()=>tf.conv2d(X,V,1,'valid'));
  const Z = tf.conv2d(X,V,1,'valid');
  time('Yh=conv(Z,H)', ()=>tf.conv2d(Z,H,1,'valid'));
  const E = tf.sub(tf.conv2d(Z,H,1,'valid'), Y);
  time('dZ=conv2dTranspose(E,H)', ()=>tf.conv2dTranspose(E,H,[B,8,16,K],1,'valid'));
  const dZ = tf.conv2dTranspose(E,H,[B,8,16,K],1,'valid');
  time('dV via batch-channel conv trick', ()=>tf.tidy(()=>{
    const Xt = X.transpose([3,1,2,0]); // (C,H,W,B)
    const F = dZ.transpose([1,2,0,3]); // (8,16,B,K)
    return tf.conv2d(Xt, F, 1, 'valid').transpose([1,2,0,3]); // (C,9,1,K)->(9,1,C,K)
  }));
  time('dV via slices+matMul', ()=>tf.tidy(()=>{
    const Xf = X.reshape([B, 16*16*48]);
    const parts=[]; for(let i=0;i<9;i++) parts.push(Xf.slice([0,i*16*48],[B,8*16*48]).reshape([B*8*16,48]));
    const Pv = tf.concat(parts,1);
    const dZt = dZ.reshape([B*8*16,K]).transpose();
    return tf.matMul(dZt, Pv);
  }));
  time('vpatch slices+concat only', ()=>tf.tidy(()=>{
    const Xf = X.reshape([B, 16*16*48]);
    const parts=[]; for(let i=0;i<9;i++) parts.push(Xf.slice([0,i*16*48],[B,8*16*48]).reshape([B*8*16,48]));
    return tf.concat(parts,1);
  }));
  time('Q hpatches + QtQ + QtE', ()=>tf.tidy(()=>{
    const Zf = Z.reshape([B*8, 16*K]);
    const parts=[]; for(let j=0;j<9;j++) parts.push(Zf.slice([0,j*K],[B*8,8*K]).reshape([B*64,K]));
    const Q = tf.concat(parts,1);
    const Qt = Q.transpose();
    return [tf.matMul(Qt,Q), tf.matMul(Qt,E.reshape([B*64,128]))];
  }));
  tf.dispose([X,V,H,Y,Z,E,dZ]);
}
