// Loaded with `node --import` into a benchmarked CLI run: reports the process's peak RSS and CPU time at exit.
process.on('exit', () => {
  const usage = process.resourceUsage();
  process.stderr.write(`\nlowrank-bench maxrss-kib ${usage.maxRSS} cpu-us ${usage.userCPUTime + usage.systemCPUTime}\n`);
});
