// Seeded pseudo-random numbers for everything that must be reproducible: the image sample, the
// held-out split and the minibatch order of data reconstruction, and the start blocks and random
// completions of the SVD. One `Random` interface (uniform, Gaussian, Fisher–Yates shuffle) over two
// uniform streams. Both are kept because saved weights depend on their exact sequences: the data
// side has always drawn from mulberry32, the linear algebra from xoshiro128+ (drawing the SVD's
// start block from mulberry32 instead flips the signs of singular-vector pairs, i.e. changes every
// factorized weight).

export class Random {
  private spare: number | null = null;

  /** `uniform` returns numbers in [0, 1). */
  constructor(readonly uniform: () => number) {}

  /** Standard normal deviate (Box–Muller; the second deviate of each pair is kept for the next call). */
  gaussian(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** A new Float32Array of the given length filled with standard normal deviates. */
  gaussianArray(length: number): Float32Array {
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) out[i] = this.gaussian();
    return out;
  }

  /** Fisher–Yates shuffle of `items` in place (returned for chaining). */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.uniform() * (i + 1));
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }
}

/** mulberry32: the stream behind data sampling, held-out splits and minibatch order. */
export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  return new Random(() => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  });
}

/** xoshiro128+ (state spread from the seed by splitmix32): the stream behind the linear algebra. */
export function xoshiro128plus(seed: number): Random {
  let x = seed >>> 0;
  const splitmix32 = (): number => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let s0 = splitmix32();
  let s1 = splitmix32();
  let s2 = splitmix32();
  let s3 = splitmix32() | 1;
  return new Random(() => {
    const result = (s0 + s3) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    return result / 4294967296;
  });
}
