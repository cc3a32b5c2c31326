#!/usr/bin/env bash
# The README's iterated-online-RLHF table (issue 19, part 2): the same total labels and PPO iterations,
# spent at once (1 round: 3 label rounds of the SFT model's samples, ~3,600 pairs, then 150 PPO iterations)
# or in 3 rounds (each ~1,200 pairs of the current policy's samples, the reward model retrained on all
# so far, then 50 more PPO iterations), at beta = 0 (the README's hacked run) and at PPO's default
# (adaptive KL, target 3). One process per seed (OMP_NUM_THREADS=1); a finished round is skipped.
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
               "default_once|--rounds=1 --label_rounds=3 --ppo_iters=150" \
               "default_rounds3|--rounds=3 --label_rounds=1 --ppo_iters=50"; do
        name=${run%%|*}; flags=${run#*|}; dir=$OUT/s$seed/$name
        mkdir -p "$dir"
        # shellcheck disable=SC2086
        if bash iterate.sh --out_dir="$dir" --sft_path="$SFT" --seed="$seed" $flags --eval_interval=25 \
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
import glob, json, os, statistics, sys
out = sys.argv[1]
ms = lambda xs, d=2: "-" if not xs else f"{statistics.mean(xs):.{d}f}" + (f" ± {statistics.stdev(xs):.{d}f}" if len(xs) > 1 else "")
names = {"beta0_once": "beta 0, 1 round", "beta0_rounds3": "beta 0, 3 rounds",
         "default_once": "default beta, 1 round", "default_rounds3": "default beta, 3 rounds"}
print("| run | pairs | at iteration | RM score (that round's RM) | gold | KL | parse | last RM acc_gold | seeds |")
print("|---|---|---|---|---|---|---|---|---|")
for name, label in names.items():
    runs = [d for d in sorted(glob.glob(os.path.join(out, "s*", name))) if os.path.exists(os.path.join(d, "ppo", "metrics.jsonl"))]
    if not runs:
        continue
    evs = [[json.loads(l) for l in open(os.path.join(d, "ppo", "metrics.jsonl")) if '"gold"' in l and '"kl"' in l] for d in runs]
    for it in sorted({e["iter"] for e in evs[0]} & {0, 50, 100, 150}):
        at = [e for ev in evs for e in ev if e["iter"] == it]
        rms = [json.loads(l) for d in runs for l in open(os.path.join(sorted(glob.glob(os.path.join(d, "round*", "reward")))[-1], "metrics.jsonl")) if '"acc_gold"' in l]
        pairs = [sum(1 for _ in open(sorted(glob.glob(os.path.join(d, "round*", "pairs.jsonl")))[-1])) for d in runs]
        last = it == max(e["iter"] for e in evs[0])
        print(f"| {label} | {ms(pairs, 0) if last else ''} | {it} | {ms([e['reward'] for e in at])} | {ms([e['gold'] for e in at])} | "
              f"{ms([e['kl'] for e in at], 1)} | {ms([e['parse'] for e in at])} | {ms([r['acc_gold'] for r in rms[-len(runs):]]) if last else ''} | {len(at)} |")
PY
