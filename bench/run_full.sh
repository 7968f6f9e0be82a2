#!/usr/bin/env bash
# The full sample-efficiency run (5 seeds), in priority order, 2 processes side by side. Every run is cached under
# bench/cache/runs/ (and resumes from its last evaluation if interrupted), so this can be stopped and restarted.
# Order: the main methods first, then the reviewers' ablations, seed by seed.
# Usage (from the repository root): nohup bash bench/run_full.sh > bench/cache/full_run.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=()
for s in 0 1; do
  for t in pendulum mountaincar; do for m in expo sac rlpd base_only; do RUNS+=("$t/$m/$s"); done; done
  [ "$s" = 0 ] && for m in expo_best_of_n expo_random_select expo_no_data; do RUNS+=("pendulum/$m/0"); done
done
for m in expo_best_of_n expo_random_select; do RUNS+=("mountaincar/$m/0"); done
for s in 2 3 4; do
  for t in pendulum mountaincar; do for m in expo sac rlpd base_only; do RUNS+=("$t/$m/$s"); done; done
done
for s in 1 2 3 4; do
  for m in expo_best_of_n expo_random_select expo_no_data; do RUNS+=("pendulum/$m/$s"); done
  for m in expo_best_of_n expo_random_select; do RUNS+=("mountaincar/$m/$s"); done
done
$PY -m bench.sample_efficiency --runs "${RUNS[@]}" --jobs 2
$PY -m bench.sample_efficiency --report-only
