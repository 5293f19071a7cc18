"""CPython's in-process compile() throughput, the baseline of the syntax benchmark.

Usage: python3 cpython_compile_bench.py LISTFILE REPEATS
Reads every listed file into memory first, then times compile(source_bytes, path, "exec")
over all of them, REPEATS times. Rejected files count too (their exception is caught).
Prints {"files": n, "bytes": total, "best_seconds": s, "best_cpu_seconds": s, "runs": [...]}
as JSON; CPU seconds are this thread's (time.thread_time), robust on a busy machine.
"""
import json
import sys
import time
import warnings


def main():
    warnings.simplefilter("ignore")
    with open(sys.argv[1], encoding="utf-8") as listing:
        paths = [line.rstrip("\n") for line in listing if line.strip()]
    repeats = int(sys.argv[2])
    sources = []
    for path in paths:
        with open(path, "rb") as f:
            sources.append((path, f.read()))
    runs = []
    cpu_runs = []
    for _ in range(repeats):
        cpu_start = time.thread_time()
        start = time.perf_counter()
        for path, source in sources:
            try:
                compile(source, path, "exec", dont_inherit=True)
            except (SyntaxError, ValueError, UnicodeError, LookupError, MemoryError, RecursionError):
                pass
        runs.append(time.perf_counter() - start)
        cpu_runs.append(time.thread_time() - cpu_start)
    total = sum(len(s) for _, s in sources)
    print(json.dumps({"files": len(sources), "bytes": total, "best_seconds": min(runs), "best_cpu_seconds": min(cpu_runs), "runs": runs}))


if __name__ == "__main__":
    main()
