#!/usr/bin/env bash
# The README's labeler table: a reward model trained on pairwise labels from a pool of 10 simulated people
# of whom 0%, 20% or 40% are unreliable (noisy, verbose or adversarial), or 40% biased (verbose and positive:
# feedback.py's default mix), each pair judged by 3 of them, the votes aggregated by majority (Bradley-Terry on
# the majority label, or on the vote share: soft labels) or by Dawid-Skene (feedback.py, then reward.py on its
# files). Reports how often the aggregated test labels match gold, the reward model's acc_gold, Spearman with
# gold and its accuracy on the length and positivity probes (task.probes). Needs an SFT model (default
# out/sft/ckpt.pt: python sft.py).
# One run at a time (OMP_NUM_THREADS=1); a finished run is skipped, so the script resumes.
# Usage: bash experiments/labelers.sh [seeds] [sft checkpoint]
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2"}
SFT=${2:-out/sft/ckpt.pt}
OUT=out/labelers
POOLS=(  # directory|what the table calls it|the pool
  "0|0%|careful:1.0"
  "20|20%|careful:0.8,noisy:0.1,adversarial:0.1"
  "40|40%|careful:0.6,noisy:0.1,verbose:0.1,adversarial:0.2"
  "40b|40% biased (the default's mix)|careful:0.6,verbose:0.2,positive:0.2"
)
AGGS=(
  "majority|--aggregate=majority --loss_type=bt"
  "soft|--aggregate=majority --loss_type=soft"
  "dawid_skene|--aggregate=dawid_skene --loss_type=bt"
)
for seed in $SEEDS; do for p in "${POOLS[@]}"; do for a in "${AGGS[@]}"; do
    IFS='|' read -r pdir pname pool <<< "$p"; aname=${a%%|*}; flags=${a#*|}
    dir=$OUT/$pdir/$aname/s$seed
    if grep -q '"spearman"' "$dir/metrics.jsonl" 2>/dev/null; then continue; fi
    rm -rf "$dir"; mkdir -p "$dir"
    # shellcheck disable=SC2086
    if python feedback.py --out_dir="$dir/feedback" --policy_path="$SFT" --seed="$seed" --labelers="$pool" \
            --n_labelers=10 ${flags%% *} > "$dir/log.txt" 2>&1 &&
       python reward.py --out_dir="$dir" --sft_path="$SFT" --data_path="$dir/feedback" --seed="$seed" \
            ${flags#* } >> "$dir/log.txt" 2>&1; then
        echo "$pname unreliable, $aname, seed $seed: done"
    else
        echo "$pname unreliable, $aname, seed $seed: FAILED (see $dir/log.txt)"
    fi
done; done; done
# each run's final reward-model eval, mean ± standard deviation over seeds
ROWS=()
for p in "${POOLS[@]}"; do
    IFS='|' read -r pdir pname pool <<< "$p"
    for agg in "majority|majority vote" "soft|majority, soft labels" "dawid_skene|Dawid-Skene"; do
        ROWS+=(--row "$pname | \`$pool\` | ${agg#*|}" "$OUT/$pdir/${agg%%|*}/s*")
    done
done
python -m experiments.table --head="unreliable | labelers | aggregation" --last=spearman --spec=.3f --spread=sd \
    --keys=labelers_acc_gold,acc_gold,spearman,probe/length,probe/positivity \
    --names="labels agree with gold | RM acc_gold | RM Spearman | RM length probe | RM positivity probe" "${ROWS[@]}"
