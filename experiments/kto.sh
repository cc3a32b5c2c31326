#!/usr/bin/env bash
# The README's KTO vs DPO table: the same SFT model's samples labelled once (feedback.py: every kind from
# the same responses), then DPO on the pairs and KTO on the thumbs up / down, at the same number of human
# judgements (one judgement = a pair compared, or one response given a thumbs; each the majority of 3
# simulated people): DPO on all pairs, DPO on as many pairs as there are thumbs, KTO on the thumbs, and
# KTO on the pairs split into desirable / undesirable responses (the KTO paper's setup on paired data),
# all at DPO's default beta 0.5, and KTO on the thumbs at beta 1 and 2 (KTO spends more KL at the same beta).
# Reports the held-out gold score, the KL to the SFT model and the thumbs-up rate at the end of each run.
# Needs an SFT model (default out/sft/ckpt.pt: python sft.py). A finished run is skipped (the script
# resumes); one run at a time (OMP_NUM_THREADS=1), so seeds can run side by side:
#   bash experiments/kto.sh "1 2 3" [sft checkpoint]      # then it prints the table of every seed so far
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2 3"}
SFT=${2:-out/sft/ckpt.pt}
OUT=out/kto
for seed in $SEEDS; do
    fb=$OUT/s$seed/feedback
    mkdir -p "$OUT/s$seed"
    if [ ! -f "$fb/binary_train.jsonl" ]; then
        python feedback.py --overwrite=True --out_dir="$fb" --policy_path="$SFT" --seed="$seed" > "$OUT/s$seed.feedback.log" 2>&1 ||
            { echo "feedback, seed $seed: FAILED"; continue; }
    fi
    n_thumbs=$(wc -l < "$fb/binary_train.jsonl")
    for run in "dpo_pairs|--data_path=$fb/pairwise_train.jsonl" \
               "dpo_pairs_budget|--data_path=$fb/pairwise_train.jsonl --max_items=$n_thumbs" \
               "kto_thumbs|--data_path=$fb/binary_train.jsonl --loss_type=kto" \
               "kto_pairs|--data_path=$fb/pairwise_train.jsonl --loss_type=kto" \
               "kto_thumbs_beta1|--data_path=$fb/binary_train.jsonl --loss_type=kto --beta=1.0" \
               "kto_thumbs_beta2|--data_path=$fb/binary_train.jsonl --loss_type=kto --beta=2.0"; do
        name=${run%%|*}; flags=${run#*|}; dir=$OUT/s$seed/$name
        if grep -q '"gold"' "$dir/metrics.jsonl" 2>/dev/null && [ -f "$dir/done" ]; then continue; fi
        rm -rf "$dir"; mkdir -p "$dir"
        # shellcheck disable=SC2086
        if python dpo.py --out_dir="$dir" --sft_path="$SFT" --seed="$seed" $flags > "$dir/log.txt" 2>&1; then
            touch "$dir/done"; echo "$name, seed $seed: done"
        else
            echo "$name, seed $seed: FAILED (see $dir/log.txt)"
        fi
    done
done
python - "$OUT" <<'PY'
import os, sys
from experiments.table import cell, last, markdown
out = sys.argv[1]
se = lambda xs, spec=".2f": cell(xs, spec)  # mean ± standard error over seeds
names = {"dpo_pairs": "DPO, all pairs", "dpo_pairs_budget": "DPO, as many pairs as thumbs",
         "kto_thumbs": "KTO, the thumbs", "kto_pairs": "KTO, all pairs split (up / down)",
         "kto_thumbs_beta1": "KTO, the thumbs, beta 1", "kto_thumbs_beta2": "KTO, the thumbs, beta 2"}
seeds = sorted(d for d in os.listdir(out) if d.startswith("s") and os.path.isdir(os.path.join(out, d)))
table = []
for name, label in names.items():
    cols = {k: [] for k in ("judgements", "rows", "gold", "kl", "accept_rate", "parse")}
    for s in seeds:
        d = os.path.join(out, s, name)
        if not os.path.exists(os.path.join(d, "done")):
            continue
        ev = last(d, "gold")
        rows = ev.get("labels")  # dpo.py's training rows (offline, every eval logs them as `labels`)
        cols["rows"].append(rows)
        cols["judgements"].append(rows // 2 if name == "kto_pairs" and rows is not None else rows)  # 2 rows a pair
        for k in ("gold", "kl", "accept_rate", "parse"):
            cols[k].append(ev[k])
    table.append([label, se(cols["judgements"], ".0f"), se(cols["rows"], ".0f"), se(cols["gold"]), se(cols["kl"]),
                  se(cols["accept_rate"]), se(cols["parse"]), len(cols["gold"])])
print(markdown(["run", "judgements", "data rows", "gold", "KL", "accept_rate", "parse", "seeds"], table))
PY
