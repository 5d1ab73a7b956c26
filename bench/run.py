"""`make bench`: every benchmark, or the ones named, with any flags after the names passed to each
(`make bench ARGS="upload --rounds 3"`)."""

from __future__ import annotations

import itertools
import subprocess
import sys

BENCHMARKS = {
    "ingest": "bench.ingest",
    "join_restart": "bench.join_restart",
    "pipeline": "bench.pipeline",
    "rollup": "bench.rollup",
    "upload": "bench.upload",
}


def main() -> int:
    args = sys.argv[1:]
    names = list(itertools.takewhile(lambda a: not a.startswith("-"), args))
    flags = args[len(names) :]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"no benchmark named {', '.join(unknown)}; there are: {', '.join(BENCHMARKS)}")
        return 2
    failed = 0
    for name in names or list(BENCHMARKS):
        print(f"\n=== {name} " + "=" * 60, flush=True)
        failed |= subprocess.call([sys.executable, "-m", BENCHMARKS[name], *flags]) != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
