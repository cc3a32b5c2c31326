#!/usr/bin/env bash
# The README's iterated-online-RLHF table (issue 19, part 2): the same total labels and PPO iterations,
# spent at once (1 round: 3 label rounds of the SFT model's samples, ~3,600 pairs, then 150 PPO iterations)
# or in 3 rounds (each ~1,200 pairs of the current policy's samples, the reward model retrained on all
# so far, then 50 more PPO iterations), at beta = 0 (the README's hacked run) and at PPO's default
# (adaptive KL, target 2); and at beta = 0 in 3 rounds whose groups pair 2 samples of the current
# policy with 2 of the SFT model (feedback.py --anchor_path), so the people compare the policy's text
# with fluent text. One process per seed (OMP_NUM_THREADS=1); a finished round is skipped.
# Needs an SFT model (default out/sft/ckpt.pt: python sft.py).
#   bash experiments/iterate.sh "1 2" [sft checkpoint]        # then the table of every seed so far
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2"}
SFT=${2:-out/sft/ckpt.pt}
OUT=${OUT:-out/iterate_exp}
one_seed() {
    local seed=$1
    for run in "beta0_once|--rounds=1 --label_rounds=3 --ppo_iters=150 --beta=0 --adaptive_kl=False" \
               "beta0_rounds3|--rounds=3 --label_rounds=1 --ppo_iters=50 --beta=0 --adaptive_kl=False" \
               "beta0_rounds3_anchor|--rounds=3 --label_rounds=1 --ppo_iters=50 --beta=0 --adaptive_kl=False --feedback.anchor_path=$SFT" \
               "default_once|--rounds=1 --label_rounds=3 --ppo_iters=150" \
               "default_rounds3|--rounds=3 --label_rounds=1 --ppo_iters=50"; do
        name=${run%%|*}; flags=${run#*|}; dir=$OUT/s$seed/$name
        mkdir -p "$dir"
        # shellcheck disable=SC2086
        if bash experiments/iterated_rlhf.sh --out_dir="$dir" --sft_path="$SFT" --seed="$seed" $flags --eval_interval=25 \
                >> "$dir/log.txt" 2>&1; then
            echo "$name, seed $seed: done"
        else
            echo "$name, seed $seed: FAILED (see $dir/log.txt)"
        fi
    done
}
for seed in $SEEDS; do
    one_seed "$seed" &
done
wait
python - "$OUT" <<'PY'
import glob, os, sys
from experiments.table import by_iter
out = sys.argv[1]
names = {"beta0_once": "beta 0, 1 round", "beta0_rounds3": "beta 0, 3 rounds",
         "beta0_rounds3_anchor": "beta 0, 3 rounds, anchored on SFT samples",
         "default_once": "default beta, 1 round", "default_rounds3": "default beta, 3 rounds"}
per_seed = lambda xs, f="{:.2f}": " / ".join(f.format(x) for x in xs)  # one value per seed, in seed order
print("| run | pairs labelled | gold at 50 | gold at 100 | gold at 150 | RM score at 150 (the last RM) | KL at 150 | parse at 150 "
      "| sycophancy at 150 | length at 150 |")
print("|---" * 10 + "|")
seeds = sorted(os.path.basename(os.path.dirname(d)) for d in glob.glob(os.path.join(out, "s*", "")))
for name, label in names.items():
    runs = [d for d in sorted(glob.glob(os.path.join(out, "s*", name))) if os.path.exists(os.path.join(d, f"round{3 if 'rounds3' in name else 1}", "done"))]
    if not runs:
        continue
    ev = [by_iter(os.path.join(d, "ppo"), split="test") for d in runs]  # each seed's held-out evals
    pairs = [sum(1 for _ in open(sorted(glob.glob(os.path.join(d, "round*", "pairs.jsonl")))[-1])) for d in runs]
    gold = " | ".join(per_seed([e[it]["gold"] for e in ev]) for it in (50, 100, 150))
    if len(runs) < len(seeds):  # a seed still running: say whose values these are
        label += " (" + " / ".join(os.path.basename(os.path.dirname(d)) for d in runs) + ")"
    print(f"| {label} | {per_seed(pairs, '{:,}')} | {gold} | {per_seed([e[150]['reward'] for e in ev])} | "
          f"{per_seed([e[150]['kl'] for e in ev], '{:.1f}')} | {per_seed([e[150]['parse'] for e in ev])} | "
          f"{per_seed([e[150]['sycophancy'] for e in ev])} | {per_seed([e[150]['response_len'] for e in ev], '{:.1f}')} |")
print(f"(each cell: one value per seed, {' / '.join(seeds)})")
PY
