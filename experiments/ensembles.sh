#!/usr/bin/env bash
# The README's "Reward hacking and its cures" runs: one reward model against an ensemble of K = 4
# (reward.py --ensemble=4: whole models from the same SFT start, own heads, own bootstrap resamples of the
# feedback), each read as the mean, the worst case (min over members) and mean - 1 * std (Coste et al.
# 2023; Eisenstein et al. 2023), spent three ways: best-of-N for N = 1..256 (sample.py; the same draws for
# every objective: same seed), PPO without a KL penalty (beta = 0, 150 iterations) and PPO at its default
# (adaptive beta from 0.2, target KL 2, 30 iterations), each evaluated every 10 iterations. Then
# experiments/overopt.py prints the tables and Gao et al.'s fits. Needs an SFT model and its feedback
# (python sft.py && python feedback.py).
# A finished run is skipped (rerun to resume); one run at a time (OMP_NUM_THREADS=1), so seeds can run
# side by side:
#   bash experiments/ensembles.sh "1 2" [sft checkpoint] [feedback dir]   # then the tables of every seed so far
#   ONLY='rm_|ppo_default' bash experiments/ensembles.sh 2 & ONLY='bon|beta0' bash experiments/ensembles.sh 2
#                                    # (after the reward models exist: two processes on disjoint runs)
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2"}
SFT=${2:-out/sft/ckpt.pt}
FB=${3:-out/feedback}
OUT=${OUT:-out/ensembles}
ONLY=${ONLY:-}  # a regular expression: only the runs whose folder matches (two processes, disjoint runs)
run() {  # run DIR LOG python ARGS...: skipped when DIR/done says it finished (or ONLY leaves it out)
    local dir=$1 log=$2; shift 2
    if [ -f "$dir/done" ] || { [ -n "$ONLY" ] && ! [[ $dir =~ $ONLY ]]; }; then return 0; fi
    rm -rf "$dir"; mkdir -p "$dir"
    if "$@" > "$log" 2>&1; then touch "$dir/done"; echo "$dir: done"; else echo "$dir: FAILED (see $log)"; fi
}
for seed in $SEEDS; do
    o=$OUT/s$seed
    mkdir -p "$o"
    run "$o/rm_single" "$o/rm_single.log" python reward.py --out_dir="$o/rm_single" --sft_path="$SFT" --data_path="$FB" --seed="$seed"
    run "$o/rm_ens4" "$o/rm_ens4.log" python reward.py --out_dir="$o/rm_ens4" --sft_path="$SFT" --data_path="$FB" --seed="$seed" --ensemble=4
    for spec in "single|$o/rm_single|mean" "mean|$o/rm_ens4|mean" "worst|$o/rm_ens4|worst" "uncertainty|$o/rm_ens4|uncertainty"; do
        IFS='|' read -r name rm obj <<< "$spec"
        run "$o/bon_$name" "$o/bon_$name.log" python sample.py --init_from="$SFT" --reward_path="$rm" --reward_ensemble="$obj" \
            --best_of=256 --max_prompts=50 --seed="$seed" --out_dir="$o/bon_$name"
        run "$o/ppo_beta0_$name" "$o/ppo_beta0_$name.log" python ppo.py --out_dir="$o/ppo_beta0_$name" --sft_path="$SFT" \
            --reward_path="$rm" --reward_ensemble="$obj" --beta=0 --adaptive_kl=False --max_iters=150 --eval_interval=10 --seed="$seed"
        run "$o/ppo_default_$name" "$o/ppo_default_$name.log" python ppo.py --out_dir="$o/ppo_default_$name" --sft_path="$SFT" \
            --reward_path="$rm" --reward_ensemble="$obj" --max_iters=30 --eval_interval=10 --seed="$seed"
    done
done
python -m experiments.overopt --root="$OUT"
