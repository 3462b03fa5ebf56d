import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import sharp from 'sharp';
import * as fs from 'node:fs';
import { saveModel } from '../dist/src/model/io.js';
await tf.setBackend('wasm');
const init = (s) => tf.initializers.heNormal({ seed: s });
const m = tf.sequential({ layers: [
  tf.layers.conv2d({ inputShape: [24,24,1], filters: 48, kernelSize: 9, activation: 'relu', name: 'conv1', kernelInitializer: init(1) }),
  tf.layers.conv2d({ filters: 128, kernelSize: 9, activation: 'relu', name: 'conv2', kernelInitializer: init(2) }),
  tf.layers.conv2d({ filters: 128, kernelSize: 8, activation: 'relu', name: 'conv3', kernelInitializer: init(3) }),
  tf.layers.conv2d({ filters: 10, kernelSize: 1, name: 'conv4', kernelInitializer: init(4) }),
  tf.layers.flatten(), tf.layers.softmax(),
]});
fs.rmSync('/tmp/rc-dev', { recursive: true, force: true });
await saveModel(m, '/tmp/rc-dev/model');
// images: smooth random blobs, 2 classes
let seed = 7; const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
for (const cls of ['a', 'b']) {
  fs.mkdirSync(`/tmp/rc-dev/images/${cls}`, { recursive: true });
  for (let i = 0; i < 150; i++) {
    const px = Buffer.alloc(24 * 24);
    const cx = 6 + rnd() * 12, cy = 6 + rnd() * 12, r = 3 + rnd() * 6;
    for (let y = 0; y < 24; y++) for (let x = 0; x < 24; x++) {
      const d = Math.hypot(x - cx, y - cy);
      const v = cls === 'a' ? (d < r ? 200 : 30) : 128 + 100 * Math.sin(x * 0.5 + rnd()) * Math.cos(y * 0.4);
      px[y * 24 + x] = Math.max(0, Math.min(255, v + rnd() * 30));
    }
    await sharp(px, { raw: { width: 24, height: 24, channels: 1 } }).png().toFile(`/tmp/rc-dev/images/${cls}/${String(i).padStart(4, '0')}.png`);
  }
}
console.log('ok');
