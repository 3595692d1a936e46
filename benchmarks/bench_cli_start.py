"""Time `vlml --help` against the start it had when the CLI imported torch, open_clip and timm
eagerly (simulated in the same run: the entry point plus those imports).

Each command runs `--repeat` times in a fresh interpreter; the median is reported. Exits with
status 1 and a FAIL line when `vlml --help` imports torch, or takes more than `--budget` s.

    python benchmarks/bench_cli_start.py [--repeat 5] [--budget 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HELP = "import sys; from vlml.cli.main import main; sys.argv = ['vlml', '--help']\n" \
       "try:\n    main()\nexcept SystemExit:\n    pass\n" \
       "assert 'torch' not in sys.modules, 'torch was imported'"
EAGER = "import torch, open_clip, timm\n" + HELP.replace(
    "\nassert 'torch' not in sys.modules, 'torch was imported'", "")


def median_seconds(code: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--budget", type=float, default=1.0, help="seconds allowed for vlml --help")
    args = p.parse_args()
    lazy = median_seconds(HELP, args.repeat)
    eager = median_seconds(EAGER, args.repeat)
    print(f"vlml --help: {lazy:.2f} s now; {eager:.2f} s with torch/open_clip/timm imported "
          f"eagerly (before); {eager / lazy:.1f}x faster")
    if lazy > args.budget:
        print(f"FAIL: vlml --help took {lazy:.2f} s > {args.budget} s")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
