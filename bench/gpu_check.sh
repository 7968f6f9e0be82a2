#!/usr/bin/env bash
# GPU check of sb3-expo in one command, for anyone with a CUDA GPU (issue 21):
#
#     bash bench/gpu_check.sh                 # from the repo root; uses .venv/bin/python, or PYTHON=/path/to/python
#
# (a) prints the GPUs and the torch / CUDA versions; (b) runs the test suite on CUDA (SB3_EXPO_TEST_DEVICE=cuda,
# not the slow tests); (c) runs bench/speed.py on CUDA, 100 timed steps per config (bench/results/gpu_check_speed.json, gpu_check.md);
# (d) runs the main job (python -m sb3_expo.main_job, logs/gpu_check_main_job) and, on its model, bench/precision.py
# (does the max-Q choice survive bf16 / TF32?); (e) writes bench/results/gpu_check.json.
# Every step is time-capped and the whole script stays within BUDGET_S (default 440 s, plus at most 10 s per
# killed step: under 8 minutes on one H100).
# A failed or timed-out step is recorded and the script goes on; it exits non-zero at the end if any step failed.
# Step logs: logs/gpu_check/.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BUDGET_S=${BUDGET_S:-440}
START=$(date +%s)
RESULTS=bench/results
LOGS=logs/gpu_check

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "python not found: $PY (create .venv or set PYTHON=/path/to/python)" >&2
    exit 2
fi
if ! OMP_NUM_THREADS=1 "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "no CUDA device: this script checks the GPU path; run bench/speed.py on the CPU instead" >&2
    exit 2
fi
mkdir -p "$RESULTS" "$LOGS"

# cap STEP_CAP RESERVE: the step's own cap, shortened so that RESERVE seconds of the budget stay for the later steps
cap() {
    local left=$((BUDGET_S - ($(date +%s) - START) - $2))
    if ((left < $1)); then echo $((left > 10 ? left : 10)); else echo "$1"; fi
}

echo "== (a) device"
nvidia-smi -L || echo "nvidia-smi failed"
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| cudnn', torch.backends.cudnn.version(), '|', torch.cuda.get_device_name(0))"

echo "== (b) tests on CUDA (not slow)"
T=$(cap 240 200)
SB3_EXPO_TEST_DEVICE=cuda timeout -k 10 "$T" "$PY" -m pytest -q -x tests -m "not slow" --timeout 300 -p no:cacheprovider >"$LOGS/pytest.log" 2>&1
PYTEST_RC=$?
PYTEST_SUMMARY=$(grep -E "(passed|failed|error|no tests ran)" "$LOGS/pytest.log" | tail -n 1)
if [ "$PYTEST_RC" = 124 ] || [ "$PYTEST_RC" = 137 ]; then PYTEST_SUMMARY="timed out after ${T} s; last summary: ${PYTEST_SUMMARY:-none}"; fi
echo "pytest exit $PYTEST_RC: $PYTEST_SUMMARY"

echo "== (c) bench/speed.py on CUDA"
T=$(cap 200 90)
rm -f "$RESULTS/gpu_check_speed.json"
timeout -k 10 "$T" "$PY" bench/speed.py --device cuda --steps 100 --act-calls 100 --json "$RESULTS/gpu_check_speed.json" --markdown "$RESULTS/gpu_check.md" 2>"$LOGS/speed.err"
SPEED_RC=$?
echo "speed exit $SPEED_RC (cap ${T} s)"

echo "== (d) main job"
T=$(cap 180 40)
JOB_START=$SECONDS
timeout -k 10 "$T" "$PY" -m sb3_expo.main_job --out logs/gpu_check_main_job --no-progress >"$LOGS/main_job.log" 2>&1
JOB_RC=$?
JOB_WALL=$((SECONDS - JOB_START))
tail -n 5 "$LOGS/main_job.log"
echo "main job exit $JOB_RC (cap ${T} s, ${JOB_WALL} s)"

echo "== (d2) reduced precision: the max-Q choice under bf16 / TF32 vs float32, on the main job's model"
rm -f "$RESULTS/gpu_check_precision.json"
if [ -f logs/gpu_check_main_job/expo_pendulum.zip ]; then
    timeout -k 10 "$(cap 40 5)" "$PY" -m bench.precision --model logs/gpu_check_main_job/expo_pendulum.zip --device cuda \
        --out "$RESULTS/gpu_check_precision.json" 2>"$LOGS/precision.err"
    echo "precision exit $?"
else
    echo "skipped: the main job saved no model"
fi

echo "== (e) $RESULTS/gpu_check.json"
PYTEST_RC=$PYTEST_RC PYTEST_SUMMARY=$PYTEST_SUMMARY SPEED_RC=$SPEED_RC JOB_RC=$JOB_RC JOB_WALL=$JOB_WALL "$PY" - <<'EOF'
import json, os, pathlib, torch
speed_path = pathlib.Path("bench/results/gpu_check_speed.json")
speed = json.loads(speed_path.read_text()) if speed_path.exists() else {}
rc = {k: int(os.environ[k]) for k in ("PYTEST_RC", "SPEED_RC", "JOB_RC")}
configs = {name: {k: r.get(k) for k in ("ms_per_env_step", "act_p50_ms", "error", "skipped") if k in r}
           for name, r in speed.get("configs", {}).items()}
failed = [step for step, key in (("pytest", "PYTEST_RC"), ("speed", "SPEED_RC")) if rc[key]]
if rc["JOB_RC"] not in (0, 124, 137):  # the main job timing out is reported, not a failure
    failed.append("main_job")
failed += [f"speed:{name}" for name, r in configs.items() if "error" in r]
out = {
    "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
    "pytest": {"summary": os.environ.get("PYTEST_SUMMARY", ""), "exit_code": rc["PYTEST_RC"]},
    "speed": {"exit_code": rc["SPEED_RC"], "preset": speed.get("preset"), "partial": speed.get("partial", True),
              "configs": configs, "targets": speed.get("targets")},
    "main_job": {"exit_code": rc["JOB_RC"], "timed_out": rc["JOB_RC"] in (124, 137),
                 "wall_s": int(os.environ["JOB_WALL"])},
    "failed": failed,
}
precision = pathlib.Path("bench/results/gpu_check_precision.json")
out["precision"] = json.loads(precision.read_text())["configs"] if precision.exists() else None
pathlib.Path("bench/results/gpu_check.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out, indent=2))
EOF
MERGE_RC=$?
# the main job's time-out is reported, not fatal; any other failed step makes the script fail
if [ "$PYTEST_RC" != 0 ] || [ "$SPEED_RC" != 0 ] || [ "$MERGE_RC" != 0 ] || { [ "$JOB_RC" != 0 ] && [ "$JOB_RC" != 124 ] && [ "$JOB_RC" != 137 ]; } \
    || grep -q '"error"' "$RESULTS/gpu_check_speed.json" 2>/dev/null; then
    echo "gpu_check: FAILED (see $RESULTS/gpu_check.json and $LOGS/)"
    exit 1
fi
echo "gpu_check: all steps passed ($(($(date +%s) - START)) s)"
