"""bench/speed.py must keep running (its numbers are measured by hand, never asserted in tests)."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "speed.py"), "--smoke", "--threads", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for title in ["float32 matmul rate", "EXPO update per env step", "Cost split", "Gradient updates/s", "Acting latency", "End-to-end"]:
        assert title in proc.stdout, title
    assert "threads=1" in proc.stdout and "torch" in proc.stdout
    # a smoke run says its numbers are no measurements, and judges no target
    assert "SMOKE RUN" in proc.stdout.split("## ")[0] and "not measurements" in proc.stdout  # in the header
    assert "not judged in a smoke run" in proc.stdout
    assert not re.search(r"\bmet\b", proc.stdout)
    results = json.loads(out.read_text())
    assert results["update_cpu"]["gflop"] > 0 and results["updates_per_s"]["sac_10_critics"] > 0
    assert results["smoke"] is True and "targets" not in results
