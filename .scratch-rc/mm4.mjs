import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
await tf.setBackend('wasm'); await tf.ready();
function time(name, f, reps=5) {
  tf.dispose(f());
  const t0 = performance.now();
  for (let i=0;i<reps;i++){ const r=f(); (Array.isArray(r)?r:[r]).forEach(t=>t.dataSync()); tf.dispose(r); }
  const ms=(performance.now()-t0)/reps;
  console.log(name, ms.toFixed(2),'ms');
}
const x2 = tf.randomNormal([32,16,16,48]);
time('9 slices', ()=>{const parts=[]; for(let i=0;i<9;i++)parts.push(x2.slice([0,i,0,0],[32,8,16,48])); return parts;});
const parts=[]; for(let i=0;i<9;i++)parts.push(x2.slice([0,i,0,0],[32,8,16,48]));
time('concat axis3', ()=>tf.concat(parts,3));
time('concat axis0', ()=>tf.concat(parts,0));
time('stack axis 3 (then reshape)', ()=>tf.stack(parts,3));
const flat = x2.reshape([-1]);
// gather vertical patches indices
const idx=[]; for(let b=0;b<32;b++)for(let y=0;y<8;y++)for(let x=0;x<16;x++)for(let i=0;i<9;i++)for(let c=0;c<48;c++) idx.push(((b*16+(y+i))*16+x)*48+c);
const it = tf.tensor1d(idx,'int32');
time('gather vpatches', ()=>tf.gather(flat,it));
const x2r = x2.reshape([32*16*16,48]);
const idx2=[]; for(let b=0;b<32;b++)for(let y=0;y<8;y++)for(let x=0;x<16;x++)for(let i=0;i<9;i++) idx2.push((b*16+(y+i))*16+x);
const it2 = tf.tensor1d(idx2,'int32');
time('gather rows vpatches', ()=>tf.gather(x2r,it2));
// full patches via gather rows
const idx3=[]; for(let b=0;b<32;b++)for(let y=0;y<8;y++)for(let x=0;x<8;x++)for(let i=0;i<9;i++)for(let j=0;j<9;j++) idx3.push((b*16+(y+i))*16+x+j);
const it3 = tf.tensor1d(idx3,'int32');
time('gather rows full patches', ()=>tf.gather(x2r,it3));
const y = tf.randomNormal([32*8*16*9,48]);
time('unsortedSegmentSum', ()=>tf.unsortedSegmentSum(y,it2, 32*16*16));
const g = tf.grad(z=>tf.gather(z,it2));
time('grad gather', ()=>g(x2r, tf.ones([32*8*16*9,48])));
