#!/usr/bin/env bash
# The README's active-learning table (issue 18, part 3): labels bought in rounds from feedback.py's
# 4,812 train pairs (their labels hidden until bought), by random, uncertainty, disagreement (query by
# committee) and BALD; 100 random labels, then 5 rounds of 100; the reward model retrained from the SFT
# start each round (experiments/active.py's defaults). One process per seed (OMP_NUM_THREADS=1, about
# 40 min a seed on one busy core), so seeds run side by side; a finished seed is skipped. Then every
# seed's runs are gathered into one folder and experiments/active.py, rerun there, reuses them all and
# prints the table and the figure.
# Needs an SFT model and its feedback (python sft.py && python feedback.py).
#   bash experiments/active.sh "1 2 3" [sft checkpoint] [feedback dir]
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2 3"}
SFT=${2:-out/sft/ckpt.pt}
FB=${3:-out/feedback}
OUT=${OUT:-out/active}
ARGS=(--sft_path="$SFT" --pool_path="$FB/pairwise_train.jsonl" --test_path="$FB/pairwise_test.jsonl")
mkdir -p "$OUT"
for seed in $SEEDS; do
    python -m experiments.active --out_dir="$OUT/s$seed" --seeds="$seed" --figure=none "${ARGS[@]}" > "$OUT/s$seed.log" 2>&1 &
done
wait
mkdir -p "$OUT/all"
cat "$OUT"/s*/metrics.jsonl > "$OUT/all/metrics.jsonl"
python -m experiments.active --out_dir="$OUT/all" --seeds="$(echo $SEEDS | tr ' ' ',')" --figure=figures/active_learning.png "${ARGS[@]}"
