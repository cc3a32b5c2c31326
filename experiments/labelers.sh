#!/usr/bin/env bash
# The README's labeler table: a reward model trained on pairwise labels from a pool of 10 simulated people
# of whom 0%, 20% or 40% are unreliable (noisy, length-biased or adversarial), each pair judged by 3 of
# them, the votes aggregated by majority (Bradley-Terry on the majority label, or on the vote share: soft
# labels) or by Dawid-Skene (feedback.py, then reward.py on its files). Reports how often the aggregated test labels match gold, and the reward
# model's acc_gold and Spearman with gold. Needs an SFT model (default out/sft/ckpt.pt: python sft.py).
# One run at a time (OMP_NUM_THREADS=1); a finished run is skipped, so the script resumes.
# Usage: bash experiments/labelers.sh [seeds] [sft checkpoint]
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2"}
SFT=${2:-out/sft/ckpt.pt}
OUT=out/labelers
POOLS=(
  "0%|careful:1.0"
  "20%|careful:0.8,noisy:0.1,adversarial:0.1"
  "40%|careful:0.6,noisy:0.1,length:0.1,adversarial:0.2"
)
AGGS=(
  "majority|--aggregate=majority --loss_type=bt"
  "soft|--aggregate=majority --loss_type=soft"
  "dawid_skene|--aggregate=dawid_skene --loss_type=bt"
)
for seed in $SEEDS; do for p in "${POOLS[@]}"; do for a in "${AGGS[@]}"; do
    pname=${p%%|*}; pool=${p#*|}; aname=${a%%|*}; flags=${a#*|}
    dir=$OUT/${pname%\%}/$aname/s$seed
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
python - "$OUT" "${POOLS[@]}" <<'PY'
import json, os, statistics, sys
out, pools = sys.argv[1], [p.split("|", 1) for p in sys.argv[2:]]
ms = lambda xs: "-" if not xs else f"{statistics.mean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")
print("| unreliable | labelers | aggregation | labels agree with gold | RM acc_gold | RM Spearman | seeds |")
print("|---|---|---|---|---|---|---|")
for pname, pool in pools:
    for agg in ("majority", "soft", "dawid_skene"):
        d = os.path.join(out, pname.rstrip("%"), agg)
        cols = {"labelers_acc_gold": [], "acc_gold": [], "spearman": []}
        for s in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            rows = [json.loads(l) for l in open(os.path.join(d, s, "metrics.jsonl"))]
            final = [r for r in rows if "spearman" in r]
            for k in cols if final else []:
                cols[k].append(final[-1][k])
        name = {"majority": "majority vote", "soft": "majority, soft labels", "dawid_skene": "Dawid-Skene"}[agg]
        print(f"| {pname} | `{pool}` | {name} | {ms(cols['labelers_acc_gold'])} | {ms(cols['acc_gold'])} | "
              f"{ms(cols['spearman'])} | {len(cols['acc_gold'])} |")
PY
