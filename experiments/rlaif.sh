#!/usr/bin/env bash
# The README's RLAIF tables. Per seed, from one SFT model:
#   demos      rlaif.py --mode=demos: simulated people label B=$BUDGET pairs of SFT samples under each of
#              task.PRINCIPLES (and rate both responses): the judge's training data, and the first
#              principle's ("Prefer the better review.") B pair labels as a pairwise file
#   judge      sft.py on those judgements, from the SFT model (its vocabulary widened to the judge's text,
#              its context to 160 tokens), 2,000 steps
#   agreement  rlaif.py: the judge labels held-out pairs under each principle (agreement with the
#              principle's score, gold, and people; position bias)
#   reward models, all tested on the same held-out human pairs, then PPO (defaults) on each:
#     human        the B human labels alone
#     human+ai     the B human labels + 10B AI labels (the judge, "Prefer the better review.")
#     human10      10B human labels
#   online     dpo.py --online --labeler=ai, 150 steps of 32 pairs the judge labels (README: online DPO)
#   direct     grpo.py --reward_fns=judge under three principles (faithful, positive, shorter): does the policy do
#              what the principle says (gold, gold/faithfulness, sycophancy, response_len)?
# Needs an SFT model (default out/sft/ckpt.pt: python sft.py). A finished step is skipped; seeds run side
# by side (one thread each):
#   bash experiments/rlaif.sh "1 2 3" [sft checkpoint]     # then the tables of every seed so far
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2"}
SFT=${2:-out/sft/ckpt.pt}
OUT=${OUT:-out/rlaif_exp}
BUDGET=${BUDGET:-2000}
JUDGE_ITERS=${JUDGE_ITERS:-2000}
step() {  # step NAME DIR COMMAND...: run unless DIR/done exists (an unfinished one starts anew); log to DIR.log
    local name=$1 dir=$2; shift 2
    if [ -f "$dir/done" ]; then return 0; fi
    mkdir -p "$dir"
    if "$@" --overwrite=True > "$dir.log" 2>&1; then touch "$dir/done"; echo "$name: done"; else echo "$name: FAILED (see $dir.log)"; return 1; fi
}
one_seed() {
    local seed=$1 d=$OUT/s$1 p
    mkdir -p "$d/principles"
    for p in better faithful positive shorter; do
        case $p in
            better) echo "Prefer the better review." ;; positive) echo "Prefer the more positive review." ;;
            shorter) echo "Prefer the shorter review." ;; faithful) echo "Prefer the more faithful review." ;;
        esac > "$d/principles/$p.txt"
    done
    step "demos, seed $seed" "$d/demos" python rlaif.py --mode=demos --out_dir="$d/demos" --policy_path="$SFT" \
        --n_pairs="$BUDGET" --seed="$seed" || return
    step "judge, seed $seed" "$d/judge" python sft.py --data_path="$d/demos/judge_demos.jsonl" --compact_vocab=True \
        --init_from="$SFT" --block_size=160 --out_dir="$d/judge" --max_iters="$JUDGE_ITERS" --eval_interval="$JUDGE_ITERS" --lr=1e-3 \
        --max_new_tokens=2 --n_print=0 --log_interval=250 --seed="$seed" || return
    for p in better faithful positive shorter; do
        step "agreement $p, seed $seed" "$d/agree_$p" python rlaif.py --judge="$d/judge" --principles="$d/principles/$p.txt" \
            --out_dir="$d/agree_$p" --policy_path="$SFT" --n_pairs=400 --seed="$seed" || return
    done
    step "AI labels, seed $seed" "$d/ai" python rlaif.py --judge="$d/judge" --out_dir="$d/ai" --policy_path="$SFT" \
        --n_pairs=$((10 * BUDGET)) --seed="$seed" || return
    step "10x human labels, seed $seed" "$d/human10" python rlaif.py --mode=demos --principles="$d/principles/better.txt" \
        --out_dir="$d/human10" --policy_path="$SFT" --n_pairs=$((10 * BUDGET)) --seed=$((seed + 100)) || return
    mkdir -p "$d/mix"
    cat "$d/demos/human/pairwise_train.jsonl" "$d/ai/pairwise_train.jsonl" > "$d/mix/pairwise_train.jsonl"
    local test=$d/demos/human/pairwise_test.jsonl
    for run in "human|$d/demos/human/pairwise_train.jsonl|300" "human+ai|$d/mix/pairwise_train.jsonl|1400" \
               "human10|$d/human10/human/pairwise_train.jsonl|1400"; do
        IFS='|' read -r name file iters <<< "$run"
        step "reward $name, seed $seed" "$d/rm_$name" python reward.py --out_dir="$d/rm_$name" --sft_path="$SFT" \
            --data_path="$file" --test_path="$test" --max_iters="$iters" --seed="$seed" || continue
        step "ppo $name, seed $seed" "$d/ppo_$name" python ppo.py --out_dir="$d/ppo_$name" --sft_path="$SFT" \
            --reward_path="$d/rm_$name/ckpt.pt" --seed="$seed" || continue
    done
    step "online dpo, the judge labels, seed $seed" "$d/online_dpo_ai" python dpo.py --online=True --labeler=ai \
        --judge_path="$d/judge" --sft_path="$SFT" --out_dir="$d/online_dpo_ai" --seed="$seed" --max_iters=150 \
        --data_path="$d/none_train.jsonl" --val_path="$test"
    for p in faithful positive shorter; do
        step "grpo judge $p, seed $seed" "$d/grpo_$p" python grpo.py --out_dir="$d/grpo_$p" --sft_path="$SFT" \
            --reward_fns=judge --judge_path="$d/judge" --judge_principles="$d/principles/$p.txt" --seed="$seed"
    done
}
for seed in $SEEDS; do
    one_seed "$seed" &
done
wait
python - "$OUT" <<'PY'
import os, sys
from experiments import table
out = sys.argv[1]
seeds = sorted(d for d in os.listdir(out) if d.startswith("s"))
def last(path, key):  # the run's last logged value of key, or None
    row = table.last(path, key)
    return row[key] if row else None
ms = lambda xs, d=3: table.cell(xs, f".{d}f", spread="sd")
print(f"seeds: {', '.join(seeds)}\n")
print("| principle | judge vs principle | vs people | people vs people | judge vs gold | position_bias |")
print("|---|---|---|---|---|---|---|")
for p, text in (("better", "Prefer the better review."), ("positive", "Prefer the more positive review."),
                ("shorter", "Prefer the shorter review."), ("faithful", "Prefer the more faithful review.")):
    col = lambda k: ms([v for s in seeds if (v := last(f"{out}/{s}/agree_{p}", k)) is not None])
    print(f"| {text} | {col('test/labels_acc_principle')} | {col('test/agreement/humans')} | "
          f"{col('test/agreement/human_human')} | {col('test/labels_acc_gold')} | {col('test/position_bias')} |")
print("\n| reward model from | labels | acc_gold | spearman | PPO gold | PPO kl |")
print("|---|---|---|---|---|---|---|")
for name in ("human", "human+ai", "human10"):
    n = [sum(1 for _ in open(f)) for s in seeds for f in [dict(human=f"{out}/{s}/demos/human/pairwise_train.jsonl",
         **{"human+ai": f"{out}/{s}/mix/pairwise_train.jsonl"}, human10=f"{out}/{s}/human10/human/pairwise_train.jsonl")[name]]
         if os.path.exists(f)]
    col = lambda d, k, dd=3: ms([v for s in seeds if (v := last(f"{out}/{s}/{d}", k)) is not None], dd)
    print(f"| {name} | {n[0] if n else '-'} | {col('rm_' + name, 'acc_gold')} | {col('rm_' + name, 'spearman')} | "
          f"{col('ppo_' + name, 'gold', 2)} | {col('ppo_' + name, 'kl', 2)} |")
col = lambda k, dd=2: ms([v for s in seeds if (v := last(f"{out}/{s}/online_dpo_ai", k)) is not None], dd)
print(f"\nonline DPO, the judge labels: gold {col('gold')}, KL {col('kl')}, parse {col('parse')}, labels {col('labels', 0)}")
print("\n| GRPO on the judge's reward, principle | gold | gold/faithfulness | sycophancy | response_len | kl |")
print("|---|---|---|---|---|---|")
for p in ("faithful", "positive", "shorter"):
    col = lambda k, dd=2: ms([v for s in seeds if (v := last(f"{out}/{s}/grpo_{p}", k)) is not None], dd)
    print(f"| {p} | {col('gold')} | {col('gold/faithfulness')} | {col('sycophancy')} | {col('response_len', 1)} | {col('kl')} |")
PY
