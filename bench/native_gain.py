"""End-to-end gain of the native CPU kernels: the cpu preset's main job (EXPO only), ``SB3_EXPO_NATIVE=0`` vs ``1``.

``python -m bench.native_gain [--pairs 3]`` runs ``python -m sb3_expo.main_job --baseline none`` alternately with
the kernels off and on (off first, then on, ``--pairs`` times), each in a fresh process with the same seed (the demo dataset
is written once, by an untimed ``--quick`` warm-up that also builds the kernels), and prints the wall time of each run and the ratio of the medians. Writes ``bench/results/native_gain.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "native_gain.json"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.native_gain", description=__doc__)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="pass --quick to the main job (smoke test)")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"0": [], "1": []}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "sb3_expo.main_job", "--baseline", "none", "--no-progress", "--quick",
                        "--out", str(Path(tmp) / "warmup")], check=True, stdout=subprocess.DEVNULL)
        for pair in range(args.pairs):
            for native in ("0", "1"):
                env = dict(os.environ, SB3_EXPO_NATIVE=native)
                cmd = [sys.executable, "-m", "sb3_expo.main_job", "--baseline", "none", "--no-progress",
                       "--out", str(Path(tmp) / f"run{pair}_{native}")] + (["--quick"] if args.quick else [])
                start = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
                times[native].append(time.perf_counter() - start)
                print(f"pair {pair + 1}: SB3_EXPO_NATIVE={native}: {times[native][-1]:.1f} s", flush=True)
    off, on = statistics.median(times["0"]), statistics.median(times["1"])
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "command": "python -m bench.native_gain" + (" --quick" if args.quick else ""),
              "seconds_native_off": times["0"], "seconds_native_on": times["1"],
              "median_off": off, "median_on": on, "gain": off / on}
    print(f"median: off {off:.1f} s, on {on:.1f} s, gain {off / on:.2f}x (the issue's bar to keep them: 1.5x)")
    if not args.quick:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
