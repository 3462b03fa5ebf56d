/**
 * Which flags go together, in one table: a flag given twice or beside its own negation, a flag
 * that only means something beside another, flags that exclude each other, and flags that would be
 * ignored. Every command checks its command line against the table before any work; a broken rule
 * is a one-line error (refuse) or a warning (warn).
 */
import type { Command } from 'commander';
import { UserError } from '../errors.js';
import { readModelFiles } from '../model/files.js';
import { layerKind } from '../model/layers.js';

/** What a rule sees: the command's flags, by commander's attribute name (`evalData` for --eval-data). */
export interface FlagView {
  /** Typed on the command line (not a default). */
  given(key: string): boolean;
  value(key: string): unknown;
  /** Classes of the layers --layers names (read from model.json without weights), for rules about layers. */
  layerClasses(): Map<string, 'spatial conv' | 'pointwise'>;
}

interface FlagRule {
  commands: readonly string[];
  /** The rule is broken. */
  when(f: FlagView): boolean;
  /** The message; `refuse` stops the run, `warn` lets it go on. */
  message: string | ((f: FlagView) => string);
  action: 'refuse' | 'warn';
}

const COMPRESSING = ['compress', 'sweep'] as const;
const READING_IMAGES = ['compress', 'sweep', 'bench', 'evaluate'] as const;

/** Flags that only mean something with --data (compress; sweep always has it). */
const DATA_ONLY: [key: string, flag: string][] = [
  ['samples', '--samples'], ['joint', '--joint'], ['iterations', '--iterations'], ['batch', '--batch'], ['seed', '--seed'],
  ['evalData', '--eval-data'], ['holdout', '--holdout'], ['scale', '--scale'], ['offset', '--offset'], ['standardize', '--standardize'],
  ['resize', '--resize'], ['labels', '--labels'],
];

const has = (f: FlagView, key: string) => f.value(key) !== undefined && f.value(key) !== false;

/** A flag that only means something beside another: refused without it. */
const needs = (commands: readonly string[], key: string, flag: string, other: string, otherFlag: string, what = otherFlag): FlagRule => ({
  commands, action: 'refuse', when: (f) => f.given(key) && !has(f, other), message: `${flag} applies to ${what}: give ${otherFlag} too`,
});

export const FLAG_RULES: FlagRule[] = [
  // Data reconstruction.
  {
    commands: ['compress'], action: 'refuse',
    when: (f) => !has(f, 'data') && DATA_ONLY.some(([k]) => f.given(k)),
    message: (f) => `${DATA_ONLY.find(([k]) => f.given(k))![1]} applies to data reconstruction: give --data <image-folder> too`,
  },
  {
    commands: COMPRESSING, action: 'refuse', when: (f) => has(f, 'evalData') && f.given('holdout'),
    message: '--holdout sets images of --data aside for checking; with --eval-data all of --data is used for fitting: give one of the two',
  },
  needs(['compress'], 'finetune', '--finetune', 'data', '--data <image-folder>', 'data reconstruction'),
  needs(['compress'], 'epochs', '--epochs', 'finetune', '--finetune', 'fine-tuning'),
  needs(['compress'], 'finetuneLayers', '--finetune-layers', 'finetune', '--finetune', 'fine-tuning'),
  needs(['compress'], 'labelWeight', '--label-weight', 'finetune', '--finetune', 'fine-tuning'),
  needs(['compress'], 'augment', '--augment', 'finetune', '--finetune', 'fine-tuning'),
  // Images.
  {
    commands: READING_IMAGES, action: 'refuse', when: (f) => has(f, 'standardize') && (f.given('scale') || f.given('offset')),
    message: (f) => `--standardize replaces --scale and --offset (each image gets zero mean and unit variance): give ${f.given('scale') ? '--scale' : '--offset'} or --standardize, not both`,
  },
  // Schemes.
  {
    commands: COMPRESSING, action: 'refuse', when: (f) => has(f, 'separable') && f.value('scheme') !== '1',
    message: '--separable applies to --scheme 1 only',
  },
  {
    commands: COMPRESSING, action: 'refuse', when: (f) => f.given('basis') && f.value('scheme') !== '1',
    message: (f) => `--basis applies to --scheme 1 only (scheme ${f.value('scheme')} has no basis filters): drop --basis or give --scheme 1`,
  },
  {
    commands: COMPRESSING, action: 'warn',
    when: (f) => f.value('scheme') === '1' && (f.given('basis') || has(f, 'separable')) && has(f, 'layers')
      && f.layerClasses().size > 0 && [...f.layerClasses().values()].every((kind) => kind === 'pointwise'),
    message: (f) => `${f.given('basis') ? `--basis ${f.value('basis')}` : '--separable'} is ignored: scheme 1 replaces convs larger than 1×1, and --layers names only 1×1 convs and Dense layers (${[...f.layerClasses().keys()].join(', ')}), which get the channel scheme`,
  },
  // Choosing ranks.
  {
    commands: ['compress'], action: 'refuse', when: (f) => has(f, 'maxLoss') && !has(f, 'data'),
    message: '--max-loss measures the loss on held-out images: give --data <image-folder> (and --eval-data <dir>, or --holdout of --data)',
  },
  {
    commands: ['compress'], action: 'refuse', when: (f) => has(f, 'maxLoss') && has(f, 'finetune'),
    message: '--finetune does not combine with --max-loss (the search would need a fine-tuning per probe): run --max-loss, then compress --rank with the chosen ranks and --finetune',
  },
  {
    commands: ['compress'], action: 'refuse', when: (f) => has(f, 'maxLoss') && (has(f, 'rank') || has(f, 'speedup')),
    message: (f) => `--max-loss chooses the speedup itself: give it without ${has(f, 'rank') ? '--rank' : '--speedup'}`,
  },
  {
    commands: ['compress'], action: 'refuse', when: (f) => !has(f, 'maxLoss') && has(f, 'rank') === has(f, 'speedup'),
    message: 'give either --rank (your ranks) or --speedup (ranks chosen for a target), not both and not neither; or --max-loss (the fastest model within a loss)',
  },
  needs(['compress'], 'probes', '--probes', 'maxLoss', '--max-loss'),
  {
    commands: ['compress'], action: 'refuse', when: (f) => has(f, 'measured') && !has(f, 'speedup'),
    message: '--measured applies to --speedup: give --speedup <x>, the speedup to reach in measured time',
  },
  needs(['compress'], 'timingBatch', '--timing-batch', 'measured', '--measured'),
  // Bench in the browser.
  needs(['bench'], 'backends', '--backends', 'browser', '--browser', "the browser bench's tfjs backends"),
  needs(['bench'], 'chromium', '--chromium', 'browser', '--browser', 'the browser bench (it chooses the browser)'),
  {
    commands: ['bench'], action: 'refuse', when: (f) => has(f, 'browser') && has(f, 'perLayer'),
    message: '--per-layer times layers in this process; leave it out with --browser',
  },
  // Backend.
  {
    commands: ['inspect', ...READING_IMAGES], action: 'warn', when: (f) => f.given('threads') && ['cpu', 'node'].includes(f.value('backend') as string),
    message: (f) => `--threads applies to the wasm backend; ${f.value('backend') === 'cpu' ? 'the cpu backend computes on one thread' : 'tfjs-node manages its own threads'}: ignored`,
  },
];

/** The flags typed on the command line, in order, by attribute name (a negated flag under its positive name). */
function typedFlags(command: Command): { key: string; flag: string }[] {
  const root = command.parent ?? command;
  const raw = (root as unknown as { rawArgs?: string[] }).rawArgs ?? [];
  const options = [...root.options, ...command.options];
  const typed: { key: string; flag: string }[] = [];
  for (const token of raw.slice(2)) {
    if (token === '--') break;
    const name = token.split('=')[0];
    const option = options.find((o) => o.long === name || o.short === name);
    if (option) typed.push({ key: option.attributeName(), flag: option.long ?? name });
  }
  return typed;
}

/**
 * Checks `command`'s flags against the table: throws on the first broken refusal rule, returns
 * the warnings. `modelPath` lets rules about --layers look the layers up.
 */
export function checkFlagRules(command: Command, modelPath?: string): string[] {
  const typed = typedFlags(command);
  const options = command.optsWithGlobals() as Record<string, unknown>;
  const warnings: string[] = [];
  for (const [i, t] of typed.entries()) {
    const earlier = typed.slice(0, i).find((e) => e.key === t.key);
    if (!earlier || typed.slice(i + 1).some((e) => e.key === t.key)) continue;
    // A flag and its negation contradict; a flag repeated overrides (scripts add to fixed arguments), said aloud.
    if (earlier.flag !== t.flag) throw new UserError(`${earlier.flag} and ${t.flag} contradict each other: give one of the two`);
    warnings.push(`${t.flag} is given more than once: the last, ${String(options[t.key])}, is used`);
  }
  let classes: Map<string, 'spatial conv' | 'pointwise'> | undefined;
  const view: FlagView = {
    given: (key) => command.getOptionValueSourceWithGlobals(key) === 'cli',
    value: (key) => options[key],
    layerClasses: () => (classes ??= modelPath ? namedLayerClasses(modelPath, String(options.layers ?? '')) : new Map()),
  };
  for (const rule of FLAG_RULES.filter((r) => r.commands.includes(command.name()) && r.when(view))) {
    const message = typeof rule.message === 'string' ? rule.message : rule.message(view);
    if (rule.action === 'refuse') throw new UserError(message);
    warnings.push(message);
  }
  return warnings;
}

/** The named layers' kinds as the schemes tell them apart (a name not found is left out: the run names it later). */
function namedLayerClasses(modelPath: string, layers: string): Map<string, 'spatial conv' | 'pointwise'> {
  const wanted = new Set(layers.split(',').map((s) => s.trim()).filter(Boolean));
  const found = new Map<string, 'spatial conv' | 'pointwise'>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(visit);
    else if (node && typeof node === 'object') {
      const { class_name: cls, config } = node as { class_name?: unknown; config?: { name?: unknown; kernel_size?: unknown } };
      if (typeof cls === 'string' && config && typeof config.name === 'string' && wanted.has(config.name)) {
        const kind = layerKind(cls, config.kernel_size);
        if (kind) found.set(config.name, kind);
      }
      Object.values(node).forEach(visit);
    }
  };
  visit(readModelFiles(modelPath).topology);
  return found;
}
