#!/usr/bin/env bash
# The full sample-efficiency run, in priority order, 2 processes side by side. Every run is cached under
# bench/cache/runs/ (and resumes from its last evaluation if interrupted), so this can be stopped and restarted.
# Order: the main methods on seeds 0-2, the stability variants (Pendulum) on seeds 0-2, the main methods on seeds
# 3-4, then the reviewers' ablations (best-of-N, random selection, no data) on seeds 0-4.
# Usage (from the repository root): nohup bash bench/run_full.sh > bench/cache/full_run.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MAIN=(expo rlpd sac base_only)
VARIANTS=(expo_no_warmup expo_ema_fast expo_edit_small expo_utd4 expo_pretrained_critic expo_base_offline)
RUNS=()
for s in 0 1 2; do for t in pendulum mountaincar; do for m in "${MAIN[@]}"; do RUNS+=("$t/$m/$s"); done; done; done
for s in 0 1 2; do for m in "${VARIANTS[@]}"; do RUNS+=("pendulum/$m/$s"); done; done
for s in 3 4; do for t in pendulum mountaincar; do for m in "${MAIN[@]}"; do RUNS+=("$t/$m/$s"); done; done; done
for s in 0 1 2 3 4; do
  for m in expo_best_of_n expo_random_select expo_no_data; do RUNS+=("pendulum/$m/$s"); done
  for m in expo_best_of_n expo_random_select; do RUNS+=("mountaincar/$m/$s"); done
done
$PY -m bench.sample_efficiency --runs "${RUNS[@]}" --jobs 2
$PY -m bench.sample_efficiency --report-only
