import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
await tf.setBackend('wasm');
const inner = tf.sequential({layers:[tf.layers.conv2d({inputShape:[8,8,3], filters:4, kernelSize:3, name:'ic1'}), tf.layers.conv2d({filters:4,kernelSize:3,name:'ic2'})], name:'inner'});
const outer = tf.sequential({layers:[inner, tf.layers.flatten(), tf.layers.dense({units:2})]});
console.log('inner inbound', inner.inboundNodes.length, 'ic1 inbound', inner.getLayer('ic1').inboundNodes.length);
const sym = inner.inboundNodes[inner.inboundNodes.length-1].inputTensors[0];
console.log('outer input is sym?', outer.inputs[0] === sym, outer.inputs[0].name, sym.name);
try { const m = tf.model({inputs: outer.inputs, outputs: [sym, outer.outputs[0]]}); console.log('ok', m.outputs.map(o=>o.shape)); const r = m.predict(tf.ones([2,8,8,3])); console.log(r.map(t=>t.shape)); } catch(e) { console.log('err', e.message); }
const innerSym = inner.getLayer('ic2').inboundNodes[0].inputTensors[0];
try { const m = tf.model({inputs: inner.inputs, outputs: [innerSym]}); console.log('inner ok', m.predict(tf.ones([2,8,8,3])).shape); } catch(e) { console.log('err2', e.message); }
try { const m = tf.model({inputs: inner.inputs, outputs: [inner.getLayer('ic1').inboundNodes[0].inputTensors[0]]}); console.log('inner input ok', m.predict(tf.ones([2,8,8,3])).shape); } catch(e) { console.log('err3', e.message); }
