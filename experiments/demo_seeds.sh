#!/usr/bin/env bash
# The demo (demo.sh's stages at their defaults) over several seeds, one stage after another, each timed:
# RESULTS.md section 1's table (each method's held-out gold and KL, mean +- standard error over seeds, and
# the paired differences between methods) and its time-to-gold table (gold against wall-clock seconds since
# the pipeline started, and against the labels consumed). Beside the demo's stages, GRPO with the reward
# model as its reward (grpo_rm: the demo's GRPO uses gold, a verifiable reward, which the others lack).
# For honest times run it alone on idle cores.
#   bash experiments/demo_seeds.sh ["1 2 3 1337"]      # -> out/demo_seeds/s<seed>/<stage>/, times.tsv
# A finished stage is skipped (the script resumes); a failed stage stops the script with its log's end.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-"1 2 3 1337"}
OUT=${OUT:-out/demo_seeds}
mkdir -p "$OUT"
for seed in $SEEDS; do
    d=$OUT/s$seed
    mkdir -p "$d"; rm -f "$d/done"
    [ -f "$d/times.tsv" ] || printf 'stage\tstart\tend\n' > "$d/times.tsv"
    run() {  # run NAME STAGE.py ARGS...: its log in $d/NAME.log, its start and end in times.tsv (done: skipped)
        local name=$1 stage=$2; shift 2
        if grep -q "^$name	" "$d/times.tsv"; then return 0; fi
        local t0; t0=$(date +%s.%N)
        if ! python "$stage" --seed="$seed" --overwrite=True "$@" > "$d/$name.log" 2>&1; then
            echo "error: seed $seed, $name failed; the end of $d/$name.log:" >&2; tail -n 5 "$d/$name.log" >&2; exit 1
        fi
        printf '%s\t%s\t%s\n' "$name" "$t0" "$(date +%s.%N)" >> "$d/times.tsv"
    }
    run sft sft.py --out_dir="$d/sft"
    run feedback feedback.py --out_dir="$d/feedback" --policy_path="$d/sft/ckpt.pt"
    run reward reward.py --out_dir="$d/reward" --sft_path="$d/sft/ckpt.pt" --data_path="$d/feedback"
    run ppo ppo.py --out_dir="$d/ppo" --sft_path="$d/sft/ckpt.pt" --reward_path="$d/reward/ckpt.pt"
    run dpo dpo.py --out_dir="$d/dpo" --sft_path="$d/sft/ckpt.pt" --data_path="$d/feedback/pairwise_train.jsonl"
    run grpo grpo.py --out_dir="$d/grpo" --sft_path="$d/sft/ckpt.pt"
    run sample sample.py --out_dir="$d/sample" --init_from="$d/sft/ckpt.pt" --reward_path="$d/reward/ckpt.pt" --best_of=16
    run grpo_rm grpo.py --out_dir="$d/grpo_rm" --sft_path="$d/sft/ckpt.pt" --reward_path="$d/reward/ckpt.pt" --reward_fns=rm
    touch "$d/done"; echo "seed $seed: done ($(tail -n +2 "$d/times.tsv" | awk '{s += $3 - $2} END {printf "%.0f", s}') s)"
done
python -m experiments.demo_seeds --root="$OUT"
