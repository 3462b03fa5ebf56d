// Loaded with `node --import` into a benchmarked CLI run: reports the process's peak RSS at exit.
process.on('exit', () => {
  process.stderr.write(`\nlowrank-bench maxrss-kib ${process.resourceUsage().maxRSS}\n`);
});
