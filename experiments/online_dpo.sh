#!/usr/bin/env bash
# The README's online-vs-offline DPO table (issue 19, part 3). Per seed: feedback.py labels the SFT
# model's samples once (the offline data: 4,8xx pairs, each the majority of 3 simulated people) and
# reward.py trains a reward model on them; then, all at DPO's defaults (beta 0.5, batch 32, lr 1e-4):
#   offline         dpo.py on those pairs, 200 steps (the README's DPO)
#   online          dpo.py --online, 150 steps: 4,800 fresh pairs from the current policy, labelled by
#                   the same kind of simulated people (3, majority) as they are sampled: as many labels
#   online_quarter  dpo.py --online, 38 steps: a quarter of the labels
#   online_small    dpo.py --online --batch_size=8, 150 steps: a quarter of the labels at as many steps
#   offline_quarter dpo.py on the first 1,212 of those pairs (a quarter), 200 steps
#   online_rm       dpo.py --online --labeler=reward, 150 steps: the seed's reward model labels instead
#                   (no human label after the offline file it was trained on)
# Reports the held-out gold score, KL to the SFT model, accept_rate, parse and labels at the last eval.
# Needs an SFT model (default out/sft/ckpt.pt: python sft.py). A finished run is skipped; one process per
# seed (OMP_NUM_THREADS=1), so seeds run side by side:
#   bash experiments/online_dpo.sh "1 2 3" [sft checkpoint]     # then the table of every seed so far
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2 3"}
SFT=${2:-out/sft/ckpt.pt}
OUT=${OUT:-out/online_dpo}
one_seed() {
    local seed=$1 fb=$OUT/s$1/feedback rmdir=$OUT/s$1/reward
    if [ ! -f "$fb/pairwise_test.jsonl" ]; then
        python feedback.py --overwrite=True --out_dir="$fb" --policy_path="$SFT" --seed="$seed" > "$OUT/s$seed/feedback.log" 2>&1 ||
            { echo "feedback, seed $seed: FAILED"; return; }
    fi
    if [ ! -f "$rmdir/done" ]; then
        python reward.py --overwrite=True --out_dir="$rmdir" --sft_path="$SFT" --data_path="$fb" --seed="$seed" > "$rmdir.log" 2>&1 &&
            touch "$rmdir/done" || { echo "reward, seed $seed: FAILED (see $rmdir.log)"; return; }
    fi
    for run in "offline|--data_path=$fb/pairwise_train.jsonl" \
               "online|--online=True --max_iters=150" \
               "online_quarter|--online=True --max_iters=38" \
               "online_small|--online=True --max_iters=150 --batch_size=8" \
               "offline_quarter|--data_path=$fb/pairwise_train.jsonl --max_items=1212" \
               "online_rm|--online=True --max_iters=150 --labeler=reward --reward_path=$rmdir/ckpt.pt"; do
        name=${run%%|*}; flags=${run#*|}; dir=$OUT/s$seed/$name
        if [ -f "$dir/done" ]; then continue; fi
        rm -rf "$dir"; mkdir -p "$dir"
        # shellcheck disable=SC2086
        if python dpo.py --out_dir="$dir" --sft_path="$SFT" --seed="$seed" --val_path="$fb/pairwise_test.jsonl" \
                $flags > "$dir/log.txt" 2>&1; then
            touch "$dir/done"; echo "$name, seed $seed: done"
        else
            echo "$name, seed $seed: FAILED (see $dir/log.txt)"
        fi
    done
}
for seed in $SEEDS; do
    mkdir -p "$OUT/s$seed"
    one_seed "$seed" &
done
wait
python - "$OUT" <<'PY'
import os, sys
from experiments.table import cell, last, markdown, read_rows
out = sys.argv[1]
sd = lambda xs, spec=",.2f": cell(xs, spec, spread="sd")
names = {"offline": "offline DPO, 200 steps on the SFT model's pairs",
         "online": "online DPO, 150 steps, simulated people",
         "offline_quarter": "offline DPO, 200 steps on the first 1,212 pairs",
         "online_quarter": "online DPO, 38 steps of 32 pairs, simulated people",
         "online_small": "online DPO, 150 steps of 8 pairs, simulated people",
         "online_rm": "online DPO, 150 steps, the reward model labels"}
seeds = sorted(d for d in os.listdir(out) if d.startswith("s") and os.path.isdir(os.path.join(out, d)))
table = []
for name, label in names.items():
    cols = {k: [] for k in ("labels", "gold", "kl", "accept_rate", "parse")}
    for s in seeds:
        d = os.path.join(out, s, name)
        if not os.path.exists(os.path.join(d, "done")):
            continue
        ev = last(d, "kl")
        offline = read_rows(os.path.join(out, s, "offline"))[0]
        ev["labels"] = offline["labels"] if name == "online_rm" else ev["labels"]  # the RM's own training pairs
        for k in cols:
            cols[k].append(ev[k])
    table.append([label, sd(cols["labels"], ",.0f"), sd(cols["gold"]), sd(cols["kl"]), sd(cols["accept_rate"]),
                  sd(cols["parse"]), len(cols["gold"])])
print(markdown(["run", "human labels", "gold", "KL", "accept_rate", "parse", "seeds"], table))
PY
