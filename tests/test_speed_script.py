"""bench/speed.py and bench/gpu_check.sh must keep running (their numbers are measured by hand, never asserted)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch as th

ROOT = pathlib.Path(__file__).resolve().parents[1]
# expo_compiled is left out: with a cold inductor cache its compilation alone takes ~100 s on 2 CPU cores
CONFIGS = ["expo_fp32", "sac_utd1"]


def test_speed_smoke(tmp_path):
    out, md = tmp_path / "speed.json", tmp_path / "speed.md"
    cmd = [sys.executable, str(ROOT / "bench" / "speed.py"), "--smoke", "--device", "cpu", "--threads", "1"]
    cmd += ["--json", str(out), "--markdown", str(md), "--configs", *CONFIGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    header = text.split("| config |")[0]
    assert "SMOKE RUN" in header and "not measurements" in header and "torch" in header and "threads 1" in header
    assert "| config | ms per env step | acting p50 ms | p90 ms | ratio to sac_utd1 (ms/step) |" in text
    for name in CONFIGS:  # a row of numbers per config (an error would show as 'error: ...' in the row)
        assert re.search(rf"^\| {name} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$", text, re.M), (name, text)
    assert "not judged in a smoke run" in text and not re.search(r"\bmet\b", text)  # no verdicts
    assert md.read_text() == text.rstrip("\n") + "\n"
    results = json.loads(out.read_text())
    assert results["smoke"] is True and results["targets"] is None and results["preset"] == "tiny"
    assert results["partial"] is False and results["device"] and results["torch"] == th.__version__
    assert list(results["configs"]) == CONFIGS
    for name, r in results["configs"].items():
        assert r["ms_per_env_step"] > 0 and 0 < r["act_p50_ms"] <= r["act_p90_ms"], (name, r)
        assert r["compile_s"] is None and r["warmup_s"] > 0


@pytest.mark.skipif(th.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_check_without_cuda():
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode != 0
    assert "no CUDA device: this script checks the GPU path; run bench/speed.py on the CPU instead" in proc.stderr
    assert proc.stdout == ""  # it stops before its first step
