#!/usr/bin/env bash
# Reward-hacking monitors against gold (issue 35; monitors.py): which signal, computed without gold on every
# rollout batch, warns before the true score falls, and by how much. Per seed, from one SFT model:
#   feedback   feedback.py (the default biased pool), its 5,994 train pairs split in two equal halves
#   rm_train   reward.py --half=1 --ensemble=3: the training reward model (3 members: monitor/ensemble_std)
#   rm_audit   reward.py --half=2: the audit reward model on the other half (monitor/audit_gap)
#   runs likely to hack, against rm_train:
#     ppo_beta0      ppo.py --beta=0 --adaptive_kl=False, 50 iterations
#     ppo_beta002    ppo.py --beta=0.02 --adaptive_kl=False, 50 iterations
#     grpo_rm        grpo.py --reward_fns=rm (kl_coef 0.02, the default), 40 batches
#   and runs likely not to:
#     ppo_default    ppo.py at its defaults (beta 0.2 toward KL 2), 50 iterations
#     grpo_rm_kl01   grpo.py --reward_fns=rm --kl_coef=0.1, 40 batches
#     grpo_gold      grpo.py --reward_fns=gold,rm:0 (gold, a verifiable reward: no proxy to hack; the reward
#                    model at weight 0 only so that its monitors are logged too), 40 batches
# Every run logs every batch (GRPO --log_interval=1) and its held-out eval only at the start and the end.
# JUDGE=DIR (an AI judge, rlaif.sh's */judge) adds monitor/judge_agree to the GRPO runs (--monitor_judge: the
# judge on pairs within groups, against the reward model's order); the monitors do not move the random state,
# so a GRPO run with the judge samples as the same run without it.
# experiments/monitors.py labels each run by the onset rule, chooses each monitor's threshold on seeds 1-2
# (--choose: experiments/monitor_thresholds.json, committed before the test seeds run) and reports on the
# others. Needs an SFT model (default out/sft/ckpt.pt). A finished run is skipped; one process per seed
# (OMP_NUM_THREADS=1), so seeds run side by side:
#   bash experiments/monitors.sh "1 2" [sft checkpoint]     # the threshold seeds, then
#   python -m experiments.monitors --root=out/monitors --choose --seeds=1,2
#   bash experiments/monitors.sh "3 4 5" [sft checkpoint]   # the test seeds, then
#   python -m experiments.monitors --root=out/monitors --seeds=3,4,5 --figure=figures/monitors.png
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2"}
SFT=${2:-out/sft/ckpt.pt}
OUT=${OUT:-out/monitors}
[ -f "$SFT" ] || { echo "error: no SFT checkpoint at $SFT (python sft.py)" >&2; exit 2; }
[ -z "${JUDGE:-}" ] || [ -d "$JUDGE" ] || { echo "error: JUDGE=$JUDGE is not a judge's directory (rlaif.sh)" >&2; exit 2; }

source experiments/step.sh  # step DIR LOG python STAGE.py ARGS...: skipped when DIR/done exists

one_seed() {
    local s=$1 o=$OUT/s$1
    mkdir -p "$o"
    step "$o/feedback" "$o/feedback.log" python feedback.py --policy_path="$SFT" --seed="$s" || return 1
    step "$o/rm_train" "$o/rm_train.log" python reward.py --sft_path="$SFT" --data_path="$o/feedback" --seed="$s" \
        --half=1 --ensemble=3 || return 1
    step "$o/rm_audit" "$o/rm_audit.log" python reward.py --sft_path="$SFT" --data_path="$o/feedback" --seed="$s" \
        --half=2 || return 1
    local ppo="python ppo.py --sft_path=$SFT --reward_path=$o/rm_train/ckpt.pt --audit_path=$o/rm_audit/ckpt.pt --seed=$s --max_iters=50 --eval_interval=50 --n_print=0"
    local grpo="python grpo.py --sft_path=$SFT --reward_path=$o/rm_train/ckpt.pt --audit_path=$o/rm_audit/ckpt.pt --seed=$s --max_iters=40 --eval_interval=40 --log_interval=1 --n_print=0${JUDGE:+ --monitor_judge=True --judge_path=$JUDGE}"
    # shellcheck disable=SC2086
    {
        step "$o/ppo_beta0" "$o/ppo_beta0.log" $ppo --beta=0 --adaptive_kl=False
        step "$o/ppo_beta002" "$o/ppo_beta002.log" $ppo --beta=0.02 --adaptive_kl=False
        step "$o/ppo_default" "$o/ppo_default.log" $ppo
        step "$o/grpo_rm" "$o/grpo_rm.log" $grpo --reward_fns=rm
        step "$o/grpo_rm_kl01" "$o/grpo_rm_kl01.log" $grpo --reward_fns=rm --kl_coef=0.1
        step "$o/grpo_gold" "$o/grpo_gold.log" $grpo --reward_fns=gold,rm:0
    }
    echo "seed $s: done"
}

for s in $SEEDS; do one_seed "$s" & done
wait
