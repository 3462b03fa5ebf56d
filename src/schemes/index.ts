/**
 * The scheme registry: every factorization lowrank offers, by its --scheme name, with the layers it
 * is made for and the ones a run without --layers replaces. Adding a scheme is one file in this
 * folder implementing `Scheme` (scheme.ts) and one line here.
 *
 * Each layer gets its own scheme: --scheme's when it is made for the layer, otherwise the only
 * registered scheme made for the layer (so `--scheme 2` replaces 3×3 convs by scheme 2 and 1×1
 * convs by the channel scheme, and `--scheme channel` touches 1×1 convs and Dense layers only).
 */
import { layerMacs } from '../model/cost.js';
import { isPointwise, isSpatialConv, type LayerInfo } from '../model/layers.js';
import { channel } from './channel.js';
import type { Scheme, SchemeOptions } from './scheme.js';
import type { Basis } from './scheme1-math.js';
import { scheme1 } from './scheme1.js';
import { scheme2 } from './scheme2.js';

export * from './scheme.js';
export { channel } from './channel.js';
export { scheme1 } from './scheme1.js';
export { scheme2 } from './scheme2.js';
export type { Basis } from './scheme1-math.js';

/** One line of the registry. */
export interface SchemeRegistration {
  /** The --scheme value. */
  name: string;
  /** One line for --help. */
  help: string;
  create(options: SchemeOptions): Scheme;
  /** The layers the scheme is made for. */
  madeFor(layer: LayerInfo): boolean;
  /** Which of them a run without --layers replaces (given every layer of the model), and the rule in words. */
  byDefault: { rule(layers: LayerInfo[]): string; picks(layer: LayerInfo, layers: LayerInfo[]): boolean };
  /** Its variants (the options besides the name that change what it builds), for tests over every scheme. */
  variants: { title: string; basis: Basis; separable: boolean }[];
}

/** The first conv works on raw pixels; the last layer with MACs makes the outputs (a classifier's rank caps its logits'). */
const firstConv = (layers: LayerInfo[]) => layers.find((l) => l.className === 'Conv2D');
const lastLayer = (layers: LayerInfo[]) => [...layers].reverse().find((l) => (layerMacs(l) ?? 0) > 0);
const SPATIAL_DEFAULT = {
  rule: (layers: LayerInfo[]) => `every Conv2D larger than 1×1 except the first conv layer${firstConv(layers) ? `, ${firstConv(layers)!.name}, which works on raw pixels` : ''}`,
  picks: (l: LayerInfo, layers: LayerInfo[]) => l !== firstConv(layers),
};

const REGISTRY: SchemeRegistration[] = [
  {
    name: '1', help: 'basis filters per input channel + 1×1 (SeparableConv2D)', create: (o) => scheme1(o.basis, o.separable), madeFor: isSpatialConv, byDefault: SPATIAL_DEFAULT,
    variants: [
      { title: 'scheme 1 per-channel', basis: 'per-channel', separable: false },
      { title: 'scheme 1 shared', basis: 'shared', separable: false },
      { title: 'scheme 1 separable', basis: 'per-channel', separable: true },
    ],
  },
  {
    name: '2', help: 'kh×1 conv then 1×kw conv', create: () => scheme2, madeFor: isSpatialConv, byDefault: SPATIAL_DEFAULT,
    variants: [{ title: 'scheme 2', basis: 'per-channel', separable: false }],
  },
  {
    name: 'channel', help: '1×1 convs and Dense layers: C→K then K→N (used for them under 1 and 2 too)', create: () => channel, madeFor: isPointwise,
    byDefault: {
      rule: (layers) => `every 1×1 Conv2D and Dense layer where the rank saves MACs, except the last layer${lastLayer(layers) ? `, ${lastLayer(layers)!.name}, which makes the outputs` : ''}`,
      picks: (l, layers) => l !== lastLayer(layers),
    },
    variants: [{ title: 'channel', basis: 'per-channel', separable: false }],
  },
];

export const SCHEME_NAMES = REGISTRY.map((r) => r.name);

/** Adds a scheme after the built-in ones (a test registers its own this way); its name joins SCHEME_NAMES. */
export function registerScheme(registration: SchemeRegistration): void {
  if (REGISTRY.some((r) => r.name === registration.name)) throw new Error(`scheme '${registration.name}' is registered already`);
  REGISTRY.push(registration);
  SCHEME_NAMES.push(registration.name);
}

/** Every variant of every registered scheme, with the layers it is made for. */
export function schemeVariants(): (SchemeOptions & { title: string; madeFor(layer: LayerInfo): boolean })[] {
  return REGISTRY.flatMap((r) => r.variants.map(({ title, basis, separable }) => ({ title, scheme: r.name, basis, separable, madeFor: r.madeFor })));
}

/** The scheme a run uses when --scheme is not given, with its default options. */
export const DEFAULT_SCHEME: SchemeOptions = { scheme: '2', basis: 'per-channel', separable: false };

export const schemeHelp = (): string => REGISTRY.map((r) => `${r.name}: ${r.help}`).join('; ');

function registration(name: string): SchemeRegistration {
  const entry = REGISTRY.find((r) => r.name === String(name));
  if (!entry) throw new Error(`unknown scheme '${name}' (registered: ${SCHEME_NAMES.join(', ')})`);
  return entry;
}

/** The scheme --scheme names. */
export function schemeFor(options: SchemeOptions): Scheme {
  return registration(options.scheme).create(options);
}

/** The schemes of one run: which replaces each layer, and what a run without --layers replaces. */
export interface SchemeSelection {
  /** The scheme --scheme names. */
  chosen: Scheme;
  /** The scheme that replaces `layer` (--scheme's when no scheme is made for it; it then refuses). */
  of(layer: LayerInfo): Scheme;
  /** The default rule of `layer`'s scheme (null when none is made for it) and whether it picks the layer. */
  defaultRule(layer: LayerInfo, layers: LayerInfo[]): { rule: string; picked: boolean } | null;
}

export function selectSchemes(options: SchemeOptions): SchemeSelection {
  const named = registration(options.scheme);
  const created = new Map<SchemeRegistration, Scheme>();
  const create = (r: SchemeRegistration) => created.get(r) ?? created.set(r, r.create(options)).get(r)!;
  const entryOf = (layer: LayerInfo): SchemeRegistration => {
    if (named.madeFor(layer)) return named;
    const made = REGISTRY.filter((r) => r.madeFor(layer));
    return made.length === 1 ? made[0] : named;
  };
  return {
    chosen: create(named),
    of: (layer) => create(entryOf(layer)),
    defaultRule(layer, layers) {
      const entry = entryOf(layer);
      return entry.madeFor(layer) ? { rule: entry.byDefault.rule(layers), picked: entry.byDefault.picks(layer, layers) } : null;
    },
  };
}

/**
 * Every name suffix a registered scheme (any variant) gives the new layers of a replaced layer: how
 * bench finds a replacement in a model written without lowrank's record of what replaced what.
 */
export function pieceSuffixes(): string[] {
  const variants = REGISTRY.flatMap((r) => r.variants.map(({ basis, separable }) => r.create({ scheme: r.name, basis, separable })));
  return [...new Set(variants.flatMap((s) => s.pieceSuffixes))];
}

/** Whether any registered scheme (with its default options) can replace `layer`. */
export function anySchemeReplaces(layer: LayerInfo): boolean {
  return REGISTRY.some((r) => r.madeFor(layer) && r.create({ scheme: r.name, basis: 'per-channel', separable: false }).refuses(layer) === null);
}
