"""`make bench`: every benchmark, or the ones named (`make bench ARGS="ingest"`)."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = {
    "ingest": "bench.ingest",
    "pipeline": "bench.pipeline",
    "upload": "bench.upload",
}


def main() -> int:
    names = [a for a in sys.argv[1:] if not a.startswith("-")] or list(BENCHMARKS)
    failed = 0
    for name in names:
        print(f"\n=== {name} " + "=" * 60, flush=True)
        failed |= subprocess.call([sys.executable, "-m", BENCHMARKS[name]]) != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
