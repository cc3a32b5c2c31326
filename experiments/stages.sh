#!/usr/bin/env bash
# RESULTS 2: each stage, one run of the demo's seed (1337) at its defaults, and the variants each subsection
# compares, all from that run's SFT model and (where they use one) its feedback and reward model:
#   reward models of every kind of feedback (ties, rankings, Likert), PPO with whitened rewards (3 seeds each
#   way), PPO with no KL penalty for 150 iterations, DPO's variants, GRPO on the reward model and with the
#   exact KL, best-of-16. Then the tables (python -m experiments.stages).
# Two runs at a time (one thread each: the 2 cores), so a run's seconds are beside another run; a finished
# run is skipped (its folder has `done`), an unfinished one starts anew:
#   bash experiments/stages.sh            # -> out/stages/<run>/ (about 20 minutes on 2 cores)
#   BASE=out/demo_seeds/s1337 bash experiments/stages.sh   # SFT, feedback and reward model copied from
#                                         # demo_seeds.sh's run of the seed (section 1's row), not trained again
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-out/stages}
SEED=${SEED:-1337}
mkdir -p "$OUT"
source experiments/step.sh  # step DIR LOG python STAGE.py ARGS...: skipped when DIR/done exists

run() {  # run NAME STAGE.py ARGS...: one run of the seed into $OUT/NAME (its log beside it), its seconds in times.tsv
    local name=$1; shift
    [ -f "$OUT/$name/done" ] && return 0
    local t0=$SECONDS
    step "$OUT/$name" "$OUT/$name.log" python "$@" --seed="${SEED}" || return 1
    printf '%s\t%s\n' "$name" $((SECONDS - t0)) >> "$OUT/times.tsv"
}
S="--sft_path=$OUT/sft/ckpt.pt"
R="--reward_path=$OUT/reward/ckpt.pt"
F="--data_path=$OUT/feedback"

# the demo's pipeline, one stage after another (or BASE's, with its seconds)
for st in sft feedback reward; do
    [ -n "${BASE:-}" ] && [ ! -f "$OUT/$st/done" ] || continue
    [ -f "$BASE/$st/ckpt.pt" ] || [ -f "$BASE/$st/pairwise_train.jsonl" ] || { echo "error: no $st in $BASE" >&2; exit 2; }
    rm -rf "${OUT:?}/$st"; cp -r "$BASE/$st" "$OUT/$st" && touch "$OUT/$st/done"
    awk -v s="$st" '$1 == s {printf "%s\t%.0f\n", s, $3 - $2}' "$BASE/times.tsv" >> "$OUT/times.tsv"
done
run sft sft.py || exit 1
run feedback feedback.py --policy_path="$OUT/sft/ckpt.pt" || exit 1
run reward reward.py "$S" "$F" || exit 1

# everything else reads those three: two queues side by side
queue_a() {
    run rm_ties reward.py "$S" "$F" --label_kind=ties
    run rm_rankings_pl reward.py "$S" "$F" --label_kind=rankings
    run rm_rankings_pairs reward.py "$S" "$F" --label_kind=rankings --loss_type=pairs
    run rm_likert_mse reward.py "$S" "$F" --label_kind=likert
    run rm_likert_ordinal reward.py "$S" "$F" --label_kind=likert --loss_type=ordinal
    run ppo ppo.py "$S" "$R"
    run ppo_beta0 ppo.py "$S" "$R" --beta=0 --adaptive_kl=False --max_iters=150 --eval_interval=25
    run sample sample.py --init_from="$OUT/sft/ckpt.pt" "$R" --best_of=16
}
queue_b() {
    local d="--data_path=$OUT/feedback/pairwise_train.jsonl"
    run dpo dpo.py "$S" "$d"
    run dpo_cdpo dpo.py "$S" "$d" --label_smoothing=0.1
    run dpo_robust dpo.py "$S" "$d" --loss_type=robust --label_smoothing=0.1
    run dpo_ipo dpo.py "$S" "$d" --loss_type=ipo
    run dpo_hinge dpo.py "$S" "$d" --loss_type=hinge
    run dpo_simpo dpo.py "$S" "$d" --loss_type=simpo
    run dpo_rpo dpo.py "$S" "$d" --rpo_alpha=1
    run grpo grpo.py "$S"
    run grpo_rm grpo.py "$S" "$R" --reward_fns=rm
    run grpo_full grpo.py "$S" --kl_estimator=full
    run grpo_k3_0.1 grpo.py "$S" --kl_coef=0.1
    run grpo_full_0.1 grpo.py "$S" --kl_estimator=full --kl_coef=0.1
    for s in 1 2 3; do  # whitening: seeds of PPO alone (the same SFT and reward model)
        SEED=$s run ppo_s$s ppo.py "$S" "$R"
        SEED=$s run ppo_whiten_s$s ppo.py "$S" "$R" --whiten_rewards=True
    done
}
queue_a & queue_b & wait
python -m experiments.stages --root="$OUT"
