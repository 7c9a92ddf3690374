#!/usr/bin/env bash
# The fast test suite's wall time, one test at a time against pytest-xdist workers, on one checkout in one run, so
# the ratio compares like with like. Run it on an idle machine: the tests start real processes, and anything else
# running moves every figure.
#
#   bash benchmarks/suite_time.sh [workers ...]     # default: 1 2
#
# Prints one line per run (workers, seconds, pytest's summary; its whole output in /tmp/suite_time_<workers>.log)
# and the ratio of each to the first.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=("$@")
[[ ${#WORKERS[@]} -eq 0 ]] && WORKERS=(1 2)
declare -A SECONDS_OF
for n in "${WORKERS[@]}"; do
    args=(-m "not slow" -q -p no:cacheprovider)
    [[ $n != 1 ]] && args+=(-n "$n")
    start=$(date +%s)
    summary=$(OMP_NUM_THREADS=1 .venv/bin/python -m pytest "${args[@]}" 2>&1 | tee "/tmp/suite_time_$n.log" | tail -1 || true)
    SECONDS_OF[$n]=$(( $(date +%s) - start ))
    echo "workers $n: ${SECONDS_OF[$n]} s  ($summary)"
done
first=${WORKERS[0]}
for n in "${WORKERS[@]:1}"; do
    python3 -c "print(f'workers $n / workers $first: {${SECONDS_OF[$n]} / ${SECONDS_OF[$first]}:.2f}')"
done
