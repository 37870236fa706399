"""Fast-path benchmark: the `sqlitebin` index scan against sqlite-vec, faiss, usearch and NumPy, with its targets.

The engines and checks are those of `sqlitebin bench` (sqlitebin/bench.py) plus the peers of benchmarks/peers.py:
random 256-bit codes, top 100, one query at a time, every answer checked against a NumPy brute force, medians
reported with ratios to the index's Hamming scan.
This script runs only the scan, at 100k, 1M and 4M codes, and prints the fast path's targets beside the numbers:

- 1,000,000 x 256-bit codes, k = 100: the Hamming scan at least 20x faster than sqlite-vec's vec0 KNN,
  within 2x of faiss IndexBinaryFlat with one thread, and the asymmetric scan within 3x of the Hamming scan;
- cost linear in the number of codes: nanoseconds per code at each size.

Run `python benchmarks/bench_knn.py` (about two minutes) or `--quick` (2,000 codes, for tests). It exits 0 whether
or not a target is met: a shared 2-core machine is too noisy to gate CI on speed.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/peers.py, also when loaded by path
import peers as peer_engines  # noqa: E402
from sqlitebin.bench import (
    ENGINES,
    check_targets,
    describe_machine,
    describe_machine_line,
    scan_benchmark,
    scan_tables,
    targets_table,
)

SIZES = (100_000, 1_000_000, 4_000_000)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="numbers of codes, comma-separated (default: %(default)s)")
    parser.add_argument("--bits", type=int, default=256, help="code width, a multiple of 64 (default 256)")
    parser.add_argument("--repeat", type=int, default=None, help="timed queries per engine (default 5; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="2,000 codes and one timed query: checks, not speed")
    args = parser.parse_args(argv)
    args.sizes = (2_000,) if args.quick else tuple(int(s) for s in args.sizes.split(",") if s.strip())
    args.repeat = args.repeat or (1 if args.quick else 5)
    if min(args.sizes) < 100 or args.bits < 64 or args.bits % 64 or args.repeat < 1:
        parser.error("sizes must be at least 100 (k), bits a positive multiple of 64, repeat at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    machine = describe_machine()
    extra, skipped = peer_engines.engines(print)
    machine["peers"] = {engine.name: engine.version for engine in extra}
    print("machine: " + describe_machine_line(machine))
    scan = scan_benchmark(args.sizes, (args.bits,), 100, args.repeat, log=print, extra_engines=extra)
    result = {"settings": {"sizes": list(args.sizes), "bits": [args.bits], "k": 100}, "scan": scan["rows"]}
    print()
    print(scan_tables(result))
    print()
    print(f"{ENGINES['sqlitebin-knn']}: nanoseconds per code (flat = linear cost)")
    for n in args.sizes:
        row = next(r for r in scan["rows"] if r["engine"] == "sqlitebin-knn" and r["n"] == n)
        print(f"  {n:>10,} codes: {row['median_ms'] * 1e6 / n:6.2f} ns/code")
    targets = check_targets({"scan": scan["rows"], "ingest": None})
    if targets:
        print()
        print(targets_table(targets))
    elif 1_000_000 not in args.sizes:
        print("\n(the targets are judged at 1,000,000 codes of 256 bits, which this run did not measure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
