#!/usr/bin/env bash
# The full sample-efficiency run (issue 22), in priority order, 2 processes side by side.
# Every run is cached under bench/cache/runs/ (an interrupted run resumes from its last evaluation) and, once
# finished, copied to bench/results/runs/<task>/<method>/seed<k>.json (committed). A finished run found in either
# place is not run again (nor is a longer one with the same settings: its first evaluations are this run's), so
# this script can be stopped and restarted at any time, by any later session:
#   nohup bash bench/run_full.sh > bench/cache/full_run.log 2>&1 &
# (extra arguments go to both commands, e.g. --cache-dir and --results-dir when run from another checkout)
# Order: the imitation-only base (cheap, checks that pretraining matches the data), then seed by seed RLPD, EXPO and
# EXPO online with data (RLPD's setting) on every task, so that the ratios exist early; then seed by seed SAC and the
# ablations (so that an interrupted run leaves every method with about as many seeds). SAC's committed runs at longer
# budgets already hold its short budget.
# Budget: 2.5 hours on the 2-core CPU (issue 22). The settings that fit it are in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
TASKS=(pendulum mountaincar pointmaze)
SEEDS=(0 1 2 3 4)
RUNS=()
for t in "${TASKS[@]}"; do for s in "${SEEDS[@]}"; do RUNS+=("$t/base_only/$s"); done; done
for s in "${SEEDS[@]}"; do
  for t in "${TASKS[@]}"; do for m in rlpd expo expo_online_data; do RUNS+=("$t/$m/$s"); done; done
done
for s in "${SEEDS[@]}"; do
  for t in "${TASKS[@]}"; do
    for m in sac expo_online_selector expo_best_of_n expo_random_select; do RUNS+=("$t/$m/$s"); done
  done
done
$PY -m bench.sample_efficiency --runs "${RUNS[@]}" --jobs "${JOBS:-2}" "$@"
$PY -m bench.sample_efficiency --report-only "$@"
