#!/usr/bin/env node
// The command runs in a child process under an always-idle supervisor, so that Ctrl-C and
// SIGTERM are heard however busy the work is (see src/cli/supervisor.ts).
import { fileURLToPath } from 'node:url';

if (process.env.LOWRANK_SUPERVISED === '1') {
  process.channel?.unref(); // the supervisor's channel must not keep a finished run alive
  const { main } = await import('../dist/src/cli/main.js');
  process.exitCode = await main(process.argv);
} else {
  const { supervise } = await import('../dist/src/cli/supervisor.js');
  process.exitCode = await supervise(fileURLToPath(import.meta.url), process.argv.slice(2));
}
