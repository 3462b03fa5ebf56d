import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { factoredLayer } from '../dist/src/reconstruct/factors.js';
await tf.setBackend(process.argv[2] ?? 'wasm'); await tf.ready();
function rnd(shape, seed) { return tf.randomNormal(shape, 0, 1, 'float32', seed); }
function geom(o) {
  const outSize = (n,k,s,d,p)=> p==='same'? Math.ceil(n/s) : Math.ceil((n-(k-1)*d)/s);
  return { ...o, outH: outSize(o.inH,o.kh,o.sh,o.dh,o.padding), outW: outSize(o.inW,o.kw,o.sw,o.dw,o.padding), useBias: true };
}
const cases = [
  { kh:3,kw:3,sh:1,sw:1,dh:1,dw:1,padding:'valid',inH:9,inW:8,C:5,N:7 },
  { kh:3,kw:5,sh:2,sw:2,dh:1,dw:1,padding:'same',inH:11,inW:10,C:4,N:6 },
  { kh:3,kw:2,sh:1,sw:1,dh:2,dw:3,padding:'same',inH:10,inW:12,C:3,N:5 },
  { kh:2,kw:3,sh:2,sw:1,dh:1,dw:2,padding:'valid',inH:9,inW:12,C:3,N:5 },
];
for (const o of cases) {
  const g = geom(o); const { kh,kw,C,N } = g; const K=4, M=2;
  const kernel = rnd([kh,kw,C,N],1).dataSync();
  const conv0 = { name:'c', config:{}, geometry:g, kernel, bias:null };
  const variants = {
    s2: { layers: [ {className:'Conv2D', weights:[{shape:[kh,1,C,K], values: rnd([kh,1,C,K],2).dataSync()}]}, {className:'Conv2D', weights:[{shape:[1,kw,K,N], values: rnd([1,kw,K,N],3).dataSync()}]} ] },
    s1: { layers: [ {className:'SeparableConv2D', weights:[{shape:[kh,kw,C,M], values: rnd([kh,kw,C,M],4).dataSync()},{shape:[1,1,C*M,N], values: rnd([1,1,C*M,N],5).dataSync()}]} ] },
    sep: { layers: [ {className:'DepthwiseConv2D', weights:[{shape:[kh,1,C,M], values: rnd([kh,1,C,M],6).dataSync()}]}, {className:'DepthwiseConv2D', weights:[{shape:[1,kw,C*M,1], values: rnd([1,kw,C*M,1],7).dataSync()}]}, {className:'Conv2D', weights:[{shape:[1,1,C*M,N], values: rnd([1,1,C*M,N],8).dataSync()}]} ] },
  };
  const x = rnd([2,g.inH,g.inW,C],9);
  const tgt = rnd([2*g.outH*g.outW, N], 10);
  const off = rnd([N], 11);
  for (const [name, rep] of Object.entries(variants)) {
    const fl = factoredLayer(conv0, rep);
    const f = fl.initial();
    // reference forward with tf ops 'same'/'valid'
    const ref = tf.tidy(()=>{
      if (name==='s2') { const z = tf.conv2d(x, f[0], [g.sh,1], g.padding, 'NHWC', [g.dh,1]); return tf.conv2d(z, f[1], [1,g.sw], g.padding, 'NHWC', [1,g.dw]).reshape([-1,N]); }
      if (name==='s1') { const u = tf.depthwiseConv2d(x, f[0], [g.sh,g.sw], g.padding, 'NHWC', [g.dh,g.dw]); return tf.matMul(u.reshape([-1,C*M]), f[1].reshape([C*M,N])); }
      const u1 = tf.depthwiseConv2d(x, f[0], [g.sh,1], g.padding, 'NHWC', [g.dh,1]); const u2 = tf.depthwiseConv2d(u1, f[1], [1,g.sw], g.padding, 'NHWC', [1,g.dw]); return tf.matMul(u2.reshape([-1,C*M]), f[2].reshape([C*M,N]));
    });
    const y = fl.forward(x, f);
    const fwdErr = tf.tidy(()=> y.sub(ref).abs().max().dataSync()[0] / ref.abs().max().dataSync()[0]);
    // design check
    const D = fl.design(x, f);
    const dErr = tf.tidy(()=> tf.matMul(D, f[fl.last].reshape([fl.lastFanIn, N])).sub(ref).abs().max().dataSync()[0] / ref.abs().max().dataSync()[0]);
    // gradient check: numerical via directional derivative using forward (on the same backend)
    const { sse, grads, offsetGrad } = fl.step(x, f, tgt, off);
    const loss = (ff, oo) => tf.tidy(()=> fl.forward(x, ff).add(oo).sub(tgt).square().sum().mul(0.5).dataSync()[0]);
    let worst = 0;
    for (let p = 0; p < f.length; p++) {
      const dir = rnd(f[p].shape, 20+p);
      const eps = 1;
      const fp = f.map((t,i)=> i===p ? t.add(dir.mul(eps)) : t);
      const fm = f.map((t,i)=> i===p ? t.sub(dir.mul(eps)) : t);
      const num = (loss(fp, off) - loss(fm, off)) / (2*eps);
      const ana = tf.tidy(()=>grads[p].mul(dir).sum().dataSync()[0]);
      worst = Math.max(worst, Math.abs(num-ana)/Math.max(1e-6, Math.abs(num)));
    }
    const dir = rnd([N], 30); const eps=1;
    const numo = (loss(f, off.add(dir.mul(eps))) - loss(f, off.sub(dir.mul(eps))))/(2*eps);
    const anao = offsetGrad.mul(dir).sum().dataSync()[0];
    worst = Math.max(worst, Math.abs(numo-anao)/Math.abs(numo));
    // filter objective grads vs numerical
    const fo = fl.filterObjective(f);
    let fworst = 0;
    const fval = (ff)=> { const r = fl.filterObjective(ff); const v = r.value.dataSync()[0]; tf.dispose([r.value, ...r.grads]); return v; };
    for (let p = 0; p < f.length; p++) {
      const dir = rnd(f[p].shape, 40+p); const eps = 1;
      const num = (fval(f.map((t,i)=> i===p ? t.add(dir.mul(eps)) : t)) - fval(f.map((t,i)=> i===p ? t.sub(dir.mul(eps)) : t)))/(2*eps);
      const ana = fo.grads[p].mul(dir).sum().dataSync()[0];
      fworst = Math.max(fworst, Math.abs(num-ana)/Math.max(1e-6,Math.abs(num))); if (name==="sep") console.log(p, num, ana);
    }
    // filterNormal consistency: value = ||W||^2 - 2<rhs,A> + <A, gram A>
    const { gram, rhs } = fl.filterNormal(f);
    const A = f[fl.last].dataSync(); const n = fl.lastFanIn;
    let quad = 0, lin = 0; for (let i=0;i<n;i++) for (let c=0;c<N;c++){ lin += rhs[i*N+c]*A[i*N+c]; let s=0; for(let j=0;j<n;j++) s+= gram[i*n+j]*A[j*N+c]; quad += A[i*N+c]*s; }
    const ww = kernel.reduce((a,v)=>a+v*v,0);
    const normErr = Math.abs(ww - 2*lin + quad - fo.value.dataSync()[0]) / fo.value.dataSync()[0];
    console.log(JSON.stringify(o.padding+o.sh+o.dh), name, 'fwd', fwdErr.toExponential(1), 'design', dErr.toExponential(1), 'grad', worst.toExponential(1), 'filterGrad', fworst.toExponential(1), 'normal', normErr.toExponential(1));
  }
}
