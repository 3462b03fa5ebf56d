/** The `lowrank` command line: global options, the commands, and one-line errors. */
import { Command, CommanderError, Option } from 'commander';
import chalk from 'chalk';
import { BACKEND_CHOICES, DEFAULT_THREADS } from '../runtime/backend.js';
import { UserError, firstLine } from '../errors.js';
import { exitCleanlyOnSignals } from '../runtime/interrupt.js';
import { VERSION } from '../version.js';
import { registerBench } from './bench.js';
import { registerCompress } from './compress.js';
import { registerEvaluate } from './evaluate.js';
import { registerInspect } from './inspect.js';
import { registerSweep } from './sweep.js';
import { stopShardPool } from '../reconstruct/shards.js';


export function buildProgram(): Command {
  const program = new Command();
  program
    .name('lowrank')
    .description('Speed up saved TensorFlow.js CNNs with low-rank expansions of their convolutions (Jaderberg et al. 2014)')
    .version(VERSION)
    .addOption(new Option('--backend <name>', 'tfjs backend: auto = tfjs-node if installed, else wasm').choices(BACKEND_CHOICES).default('auto'))
    .option('--threads <n>', 'threads the wasm backend computes on (1–64; it uses at most 8)', String(DEFAULT_THREADS))
    .option('--verbose', 'print stack traces of errors', false)
    .showHelpAfterError('(add --help for usage)')
    .exitOverride();
  registerInspect(program);
  registerCompress(program);
  registerBench(program);
  registerEvaluate(program);
  registerSweep(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  exitCleanlyOnSignals();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed its message (or help / version).
      return err.exitCode;
    }
    const verbose = argv.includes('--verbose');
    if (err instanceof UserError) {
      console.error(`${chalk.red('lowrank:')} ${err.message}`);
      if (verbose) console.error(err.stack);
      return 1;
    }
    console.error(`${chalk.red('lowrank: internal error:')} ${firstLine(err)}${verbose ? '' : ' (run with --verbose for details)'}`);
    if (verbose) console.error(err instanceof Error ? err.stack : err);
    return 2;
  } finally {
    stopShardPool();
  }
}
