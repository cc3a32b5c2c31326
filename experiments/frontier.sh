#!/usr/bin/env bash
# The RLHF frontier on the built-in task, from nothing, in one command:
#
#     bash experiments/frontier.sh            # the full sweep -> out/frontier/, figures/ (the README's figures)
#     bash experiments/frontier.sh --quick    # a smaller sweep -> out/frontier-quick/ (figures in its figures/)
#
# One SFT model and one reward model (the demo's default sizes), then every way of spending KL against
# that reward model: best-of-N for N = 1..256 (4 seeds of the 50 held-out prompts), PPO at several
# target KLs and with no KL penalty at all (beta = 0), DPO at several betas on the reward model's own
# training pairs, GRPO with the reward model as its reward at several KL coefficients. Every run is
# evaluated on the same held-out prompts (gold score, exact sequence KL to the SFT model). Then
# experiments/frontier.py draws the three figures and writes the tables they are drawn from (frontier.md),
# python -m experiments.frontier --root=OUT --out_dir=FIGURES to redraw them. Needs matplotlib
# for the figures only (pip install matplotlib); without it the runs still complete and the tables are
# written. Each run's wall time goes to times.tsv.
#
# PPO's adaptive KL controller (Ziegler et al. 2019) moves beta by at most 0.2 * batch / kl_horizon per
# iteration; ppo.py's default horizon (10,000 samples, lm-human-preferences' value for batch 512 and
# thousands of steps) would move beta by at most 11% in the full sweep's 80 iterations, so the target would
# not be reached. Here kl_horizon = 640 gives K_beta = 64 / 640 = 0.1, the value of Ziegler et al.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "error: unknown argument $arg (use --quick or nothing)" >&2; exit 2 ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    OUT=${OUT:-out/frontier-quick}; FIGURES=${FIGURES:-$OUT/figures}
    SFT_ITERS=400; RM_ITERS=150; BON_N=64; BON_SEEDS="1"
    PPO_TARGETS="2 8"; PPO_ITERS=40; PPO_BETA0_ITERS=80; PPO_EVAL=10
    DPO_BETAS="0.1 0.5"; DPO_ITERS=100
    GRPO_KLS="0.02 0.1"; GRPO_ITERS=20
else
    OUT=${OUT:-out/frontier}; FIGURES=${FIGURES:-figures}
    SFT_ITERS=800; RM_ITERS=200; BON_N=256; BON_SEEDS="1 2 3 4"
    PPO_TARGETS="1 2 4 8"; PPO_ITERS=80; PPO_BETA0_ITERS=150; PPO_EVAL=10
    DPO_BETAS="0.05 0.1 0.2 0.5 1.0 2.0"; DPO_ITERS=200
    GRPO_KLS="0.005 0.02 0.05 0.1 0.2"; GRPO_ITERS=30
fi

if [ -e "$OUT" ] && [ ! -f "$OUT/times.tsv" ]; then  # never delete a folder this script did not write
    echo "error: $OUT exists and is not a frontier.sh output folder (no times.tsv); remove it or set OUT=another/folder" >&2
    exit 2
fi
rm -rf "$OUT"   # from nothing: the stages append to metrics.jsonl
mkdir -p "$OUT"
printf 'run\tseconds\n' > "$OUT/times.tsv"
START=$SECONDS

run() {  # run NAME python STAGE.py ARGS...: one stage, its log in OUT/NAME.log, its time in times.tsv
    local name=$1; shift
    local t0=$SECONDS
    echo "== $name: $*"
    if ! "$@" > "$OUT/$name.log" 2>&1; then
        echo "error: $name failed; the end of $OUT/$name.log:" >&2
        tail -n 5 "$OUT/$name.log" >&2
        exit 1
    fi
    printf '%s\t%d\n' "$name" $((SECONDS - t0)) | tee -a "$OUT/times.tsv"
}

SFT=$OUT/sft/ckpt.pt
RM=$OUT/reward/ckpt.pt
run sft python sft.py --out_dir="$OUT/sft" --max_iters=$SFT_ITERS --eval_interval=$SFT_ITERS
run feedback python feedback.py --out_dir="$OUT/feedback" --policy_path="$SFT"
run reward python reward.py --out_dir="$OUT/reward" --sft_path="$SFT" --data_path="$OUT/feedback" --max_iters=$RM_ITERS

for seed in $BON_SEEDS; do   # prefixes of the same N samples give every power of two below N
    run bon_s$seed python sample.py --init_from="$SFT" --reward_path="$RM" --best_of=$BON_N \
        --seed=$seed --out_dir="$OUT/bon_s$seed"
done
for t in $PPO_TARGETS; do
    run ppo_kl$t python ppo.py --out_dir="$OUT/ppo_kl$t" --sft_path="$SFT" --reward_path="$RM" \
        --target_kl=$t --beta=0.1 --kl_horizon=640 --max_iters=$PPO_ITERS --eval_interval=$PPO_EVAL
done
run ppo_beta0 python ppo.py --out_dir="$OUT/ppo_beta0" --sft_path="$SFT" --reward_path="$RM" \
    --beta=0 --adaptive_kl=False --max_iters=$PPO_BETA0_ITERS --eval_interval=$PPO_EVAL
for b in $DPO_BETAS; do
    run dpo_beta$b python dpo.py --out_dir="$OUT/dpo_beta$b" --sft_path="$SFT" \
        --data_path="$OUT/feedback/pairwise_train.jsonl" --beta=$b --max_iters=$DPO_ITERS \
        --eval_interval=$((DPO_ITERS / 2))
done
for k in $GRPO_KLS; do
    run grpo_kl$k python grpo.py --out_dir="$OUT/grpo_kl$k" --sft_path="$SFT" --reward_path="$RM" \
        --reward_fns=rm --kl_coef=$k --max_iters=$GRPO_ITERS --eval_interval=$((GRPO_ITERS / 3))
done

printf 'total\t%d\n' $((SECONDS - START)) | tee -a "$OUT/times.tsv"
python -m experiments.frontier --root="$OUT" --out_dir="$FIGURES"
