#!/usr/bin/env bash
# The full sample-efficiency run (issue 22), in priority order, 2 processes side by side.
# Every run is cached under bench/cache/runs/ (an interrupted run resumes from its last evaluation) and, once
# finished, copied to bench/results/runs/<task>/<method>/seed<k>.json (committed). A finished run found in either
# place is not run again (nor is a longer one with the same settings: its first evaluations are this run's), so
# this script can be stopped and restarted at any time, by any later session:
#   nohup bash bench/run_full.sh > bench/cache/full_run.log 2>&1 &
# Order: the imitation-only base (cheap, checks that pretraining matches the data), then EXPO and RLPD on every task
# for seeds 0-4 (so that the ratios exist early), then SAC, then seed by seed the ablations and EXPO online with
# data (so that an interrupted run leaves every method with about as many seeds).
# Measured on the 2-core CPU: 3.2-4.2 hours in all (the compute table of bench/results/sample_efficiency.md).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
TASKS=(pendulum mountaincar pointmaze)
SEEDS=(0 1 2 3 4)
RUNS=()
for t in "${TASKS[@]}"; do for s in "${SEEDS[@]}"; do RUNS+=("$t/base_only/$s"); done; done
for s in "${SEEDS[@]}"; do for t in "${TASKS[@]}"; do for m in rlpd expo; do RUNS+=("$t/$m/$s"); done; done; done
for s in "${SEEDS[@]}"; do for t in "${TASKS[@]}"; do RUNS+=("$t/sac/$s"); done; done
for s in "${SEEDS[@]}"; do
  for t in "${TASKS[@]}"; do
    for m in expo_online_selector expo_best_of_n expo_random_select expo_online_data; do RUNS+=("$t/$m/$s"); done
  done
done
$PY -m bench.sample_efficiency --runs "${RUNS[@]}" --jobs "${JOBS:-2}"
$PY -m bench.sample_efficiency --report-only
