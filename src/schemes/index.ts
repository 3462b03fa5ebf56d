/**
 * The scheme registry: every factorization lowrank offers, by its --scheme name. Adding a scheme is
 * one file in this folder implementing `Scheme` (scheme.ts) and one line here.
 */
import type { Basis } from '../factorize/scheme1.js';
import type { Scheme } from './scheme.js';
import { scheme1 } from './scheme1.js';
import { scheme2 } from './scheme2.js';

export * from './scheme.js';
export { scheme1 } from './scheme1.js';
export { scheme2 } from './scheme2.js';
export type { Basis } from '../factorize/scheme1.js';

/** The flags that pick a scheme and its variant. */
export interface SchemeOptions {
  /** A registered --scheme name ('1', '2'). */
  scheme: string;
  basis: Basis;
  separable: boolean;
}

interface Registration {
  /** The --scheme value. */
  name: string;
  /** One line for --help. */
  help: string;
  create(options: SchemeOptions): Scheme;
}

const REGISTRY: Registration[] = [
  { name: '1', help: 'basis filters per input channel + 1×1 (SeparableConv2D)', create: (o) => scheme1(o.basis, o.separable) },
  { name: '2', help: 'kh×1 conv then 1×kw conv', create: () => scheme2 },
];

export const SCHEME_NAMES = REGISTRY.map((r) => r.name);

export const schemeHelp = (): string => REGISTRY.map((r) => `${r.name}: ${r.help}`).join('; ');

export function schemeFor(options: SchemeOptions): Scheme {
  const entry = REGISTRY.find((r) => r.name === String(options.scheme));
  if (!entry) throw new Error(`unknown scheme '${options.scheme}' (registered: ${SCHEME_NAMES.join(', ')})`);
  return entry.create(options);
}
