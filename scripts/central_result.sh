#!/usr/bin/env bash
# The paper's central result on the synthetic testbed (docs/results/central-result.md):
# always-smallest vs always-random vs always-largest, default settings, paired by seed.
#   bash scripts/central_result.sh [SEEDS...]     (default seeds 0 1 2 3 4; ~6 s per run, 8 s per new world)
set -euo pipefail
db=${HARNESS_DB:-central.db}
seeds=${*:-0 1 2 3 4}
for seed in $seeds; do
  for selector in smallest random largest; do
    harness run --selector "$selector" --seed "$seed" --db "$db"
  done
done
python scripts/paired_differences.py --db "$db" --baseline random
