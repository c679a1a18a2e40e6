#!/usr/bin/env python3
"""fdatasync latency of a disk, as a SQLite WAL commit sees it.

Usage: scripts/fsync_probe.py [DIR] [COUNT]

Appends 4 KiB to a temporary file in DIR (default: the current directory)
COUNT times (default 3,000), each followed by fdatasync, and prints the
latency percentiles. Every durable acknowledgement waits for one such sync
(`synchronous = full`), so a disk's p99 here is a floor for ingest's p99.
"""

import os
import sys
import tempfile
import time


def main() -> int:
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    try:
        count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    except ValueError:
        print(f"COUNT must be a whole number, not {sys.argv[2]!r}", file=sys.stderr)
        return 2
    if count < 1:
        print("COUNT must be at least 1", file=sys.stderr)
        return 2
    try:
        fd, path = tempfile.mkstemp(dir=directory, prefix="fsync-probe-")
    except OSError as e:
        print(f"cannot create a file in {directory}: {e}", file=sys.stderr)
        return 1
    block = b"x" * 4096
    latencies = []
    try:
        for _ in range(count):
            os.write(fd, block)
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - started) * 1000.0)
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(
        f"fdatasync in {directory}: n={count} p50={q(0.5):.2f} ms p90={q(0.9):.2f} ms "
        f"p99={q(0.99):.2f} ms p99.9={q(0.999):.2f} ms max={latencies[-1]:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
