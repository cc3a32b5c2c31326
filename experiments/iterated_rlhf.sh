#!/usr/bin/env bash
# Iterated online RLHF (Bai et al. 2022, "Training a Helpful and Harmless Assistant with RLHF": iterated
# online RLHF; Stiennon et al. 2020 labelled the current policy's samples in batches). The classic pipeline
# labels the SFT model's samples once, and the policy then leaves that distribution (the beta = 0 run of
# the README); here every round
#   1. samples from the *current* policy and has the simulated people label them      feedback.py
#   2. retrains the reward model, from the SFT model, on every label so far            reward.py
#   3. continues PPO from the current policy against the new reward model               ppo.py --init_from=resume
# so responses that hack round r's reward model are in round r+1's labels.
#
#   bash experiments/iterated_rlhf.sh            # 3 rounds of 1 label round (~1,200 pairs) and 50 PPO iterations
#   bash experiments/iterated_rlhf.sh --rounds=1 --label_rounds=3 --ppo_iters=150  # the same labels and RL steps, at once
#   bash experiments/iterated_rlhf.sh --beta=0 --adaptive_kl=False   # any other --key=value goes to ppo.py,
#   bash experiments/iterated_rlhf.sh --reward.max_iters=150 --feedback.n_annotators=5
#                                                # --reward.* to reward.py, --feedback.* to feedback.py
#   bash experiments/iterated_rlhf.sh --feedback.anchor_path=out/sft/ckpt.pt
#                                                # each group: 2 samples of the policy, 2 of the SFT model
#
# Labels of the current policy's samples alone compare its samples with each other: once all of them are
# equally broken (gold -1), the people's votes are coin flips and the reward model learns nothing about
# broken against fluent text. The anchor puts fluent text in every comparison (README: Beyond RLHF).
#
# Round r writes out_dir/round{r}/feedback (feedback.py's files for round r's samples), pairs.jsonl and
# pairs_test.jsonl (every round's pairs so far: the reward model's data), reward/ (its checkpoint) and
# ppo.ckpt.pt (the policy after round r); out_dir/ppo/ is the one PPO run, continued round after round
# (its metrics.jsonl: every eval, with the round's reward model as `reward`). A finished round is skipped,
# so an interrupted run continues where it stopped. Labels: feedback.py's `n_rounds` groups of 4 samples
# per train prompt (1: ~1,200 pairs); one PPO iteration is 64 rollouts.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3; label_rounds=1; ppo_iters=50; seed=1337; out_dir=out/iterate; sft_path=out/sft/ckpt.pt
ppo_args=(); reward_args=(); feedback_args=()
die() { echo "error: $1" >&2; exit 2; }
for arg in "$@"; do
  case "$arg" in
    --rounds=*) rounds="${arg#*=}" ;;
    --label_rounds=*) label_rounds="${arg#*=}" ;;
    --ppo_iters=*) ppo_iters="${arg#*=}" ;;
    --seed=*) seed="${arg#*=}" ;;
    --out_dir=*) out_dir="${arg#*=}" ;;
    --sft_path=*) sft_path="${arg#*=}" ;;
    --help|-h) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    --reward.*=*) reward_args+=("--${arg#--reward.}") ;;
    --feedback.*=*) feedback_args+=("--${arg#--feedback.}") ;;
    --*=*) ppo_args+=("$arg") ;;
    *) die "unknown argument $arg (iterated_rlhf.sh takes --key=value; --help lists them)" ;;
  esac
done
for v in rounds label_rounds ppo_iters; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--$v=${!v}: must be a whole number >= 1"
done
[ -f "$sft_path" ] || die "$sft_path: no SFT checkpoint here; run \`python sft.py\` first or pass --sft_path=..."
mkdir -p "$out_dir"

for ((r = 1; r <= rounds; r++)); do
  d=$out_dir/round$r
  [ -f "$d/done" ] && { echo "round $r: done already"; continue; }
  policy=$([ "$r" = 1 ] && echo "$sft_path" || echo "$out_dir/round$((r - 1))/ppo.ckpt.pt")
  echo "=== round $r of $rounds: label samples of $policy"
  # 1. the current policy's samples, labelled (another seed each round: other prompts' groups, other noise)
  python feedback.py --overwrite=True --policy_path="$policy" --out_dir="$d/feedback" --n_rounds="$label_rounds" --seed=$((seed + r)) \
    ${feedback_args[@]+"${feedback_args[@]}"}
  # 2. every label so far, the reward model retrained on them from the SFT model
  cat "$out_dir"/round*/feedback/pairwise_train.jsonl > "$d/pairs.jsonl"
  cat "$out_dir"/round*/feedback/pairwise_test.jsonl > "$d/pairs_test.jsonl"
  echo "=== round $r: reward model on $(wc -l < "$d/pairs.jsonl") pairs"
  python reward.py --overwrite=True --out_dir="$d/reward" --sft_path="$sft_path" --data_path="$d/pairs.jsonl" \
    --test_path="$d/pairs_test.jsonl" --seed="$seed" ${reward_args[@]+"${reward_args[@]}"}
  # 3. PPO continues from the current policy (and its critic, optimizers and KL controller) against it
  python ppo.py --overwrite=True --out_dir="$out_dir/ppo" --sft_path="$sft_path" --reward_path="$d/reward/ckpt.pt" \
    --init_from=$([ "$r" = 1 ] && echo sft || echo resume) --max_iters=$((r * ppo_iters)) \
    --eval_interval="$ppo_iters" --seed="$seed" ${ppo_args[@]+"${ppo_args[@]}"}
  cp "$out_dir/ppo/ckpt.pt" "$d/ppo.ckpt.pt"
  touch "$d/done"
done
