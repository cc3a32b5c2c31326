#!/usr/bin/env bash
# RESULTS 4.2: thumbs up / down against pairwise comparisons at the same number of labels. Per seed, from one
# SFT model: feedback.py (the default pool; every kind of feedback on the same samples), then three reward
# models, all tested on the same held-out pairs (pairwise_test.jsonl):
#   binary        reward.py --label_kind=binary: the thumbs (the majority of 3 per distinct response)
#   pairwise_eq   reward.py --max_items=N, N = the number of thumbs: as many comparisons
#   pairwise      reward.py: every comparison (the default)
# Needs an SFT model (default out/sft/ckpt.pt: python sft.py). A finished run is skipped; one process per
# seed (OMP_NUM_THREADS=1), so seeds run side by side:
#   bash experiments/thumbs.sh "1 2" [sft checkpoint]     # then the table of every seed so far
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2"}
SFT=${2:-out/sft/ckpt.pt}
OUT=${OUT:-out/thumbs}
[ -f "$SFT" ] || { echo "error: no SFT checkpoint at $SFT (python sft.py)" >&2; exit 2; }

source experiments/step.sh  # step DIR LOG python STAGE.py ARGS...: skipped when DIR/done exists

one_seed() {
    local s=$1 o=$OUT/s$1
    mkdir -p "$o"
    step "$o/feedback" "$o/feedback.log" python feedback.py --policy_path="$SFT" --seed="$s" || return 1
    local n
    n=$(wc -l < "$o/feedback/binary_train.jsonl")
    step "$o/binary" "$o/binary.log" python reward.py --sft_path="$SFT" --data_path="$o/feedback" --seed="$s" \
        --label_kind=binary
    step "$o/pairwise_eq" "$o/pairwise_eq.log" python reward.py --sft_path="$SFT" --data_path="$o/feedback" \
        --seed="$s" --max_items="$n"
    step "$o/pairwise" "$o/pairwise.log" python reward.py --sft_path="$SFT" --data_path="$o/feedback" --seed="$s"
    echo "seed $s: done"
}

for s in $SEEDS; do one_seed "$s" & done
wait
python -m experiments.table --head="labels" --last=spearman --spec=.3f --spread=sd --done \
    --keys=acc_gold,spearman,length_acc_gold --names="acc_gold | Spearman | length alone" \
    --row "thumbs (\`--label_kind=binary\`)" "$OUT/s*/binary" \
    --row "as many comparisons (\`--max_items\`)" "$OUT/s*/pairwise_eq" \
    --row "every comparison (the default)" "$OUT/s*/pairwise"
