#!/usr/bin/env bash
# The README's multi-aspect table: people rate every response 1-5 on each of gold's parts (task.ASPECTS:
# completeness, faithfulness, recommendation, hallucination, fluency, brevity; gold is exactly their sum),
# reward.py trains one reward model per aspect (calibrated to the aspect's units), and PPO optimises three
# weightings of them: all 1 (gold's own weighting), without faithfulness, without hallucination. Reports each policy's
# gold and gold's parts on held-out prompts, and the KL to the SFT model; the single pairwise reward
# model's PPO (the default recipe) beside them. Needs an SFT model (default out/sft/ckpt.pt). One run at
# a time (OMP_NUM_THREADS=1); a finished run is skipped, so PPO seeds can run side by side once the
# reward models exist:   bash experiments/aspects.sh "1 2 3" [sft checkpoint]
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2 3"}
SFT=${2:-out/sft/ckpt.pt}
OUT=out/aspects
ASPECTS="completeness faithfulness recommendation hallucination fluency brevity"
mkdir -p "$OUT"
[ -f "$OUT/feedback/aspects_train.jsonl" ] ||
    python feedback.py --overwrite=True --out_dir="$OUT/feedback" --policy_path="$SFT" > "$OUT/feedback.log" 2>&1 || { echo "feedback FAILED"; exit 1; }
for a in $ASPECTS pairwise; do
    [ -f "$OUT/rm_$a/done" ] && continue
    kind=$([ "$a" = pairwise ] && echo "--label_kind=pairwise" || echo "--label_kind=aspects --aspect=$a")
    # shellcheck disable=SC2086
    python reward.py --overwrite=True --out_dir="$OUT/rm_$a" --sft_path="$SFT" --data_path="$OUT/feedback" $kind \
        > "$OUT/rm_$a.log" 2>&1 && touch "$OUT/rm_$a/done" || { echo "reward model $a FAILED"; exit 1; }
done
RMS=$(for a in $ASPECTS; do printf '%s,' "$OUT/rm_$a"; done); RMS=${RMS%,}
for seed in $SEEDS; do
    for run in "gold|$RMS|1,1,1,1,1,1" \
               "nofaith|$RMS|1,0,1,1,1,1" \
               "nohalluc|$RMS|1,1,1,0,1,1" \
               "single|$OUT/rm_pairwise|"; do
        IFS='|' read -r name rms weights <<< "$run"
        dir=$OUT/ppo_${name}_s$seed
        [ -f "$dir/done" ] && continue
        rm -rf "$dir"; mkdir -p "$dir"
        if python ppo.py --out_dir="$dir" --sft_path="$SFT" --reward_path="$rms" --aspect_weights="$weights" \
                --max_iters=30 --eval_interval=15 --seed="$seed" > "$dir/log.txt" 2>&1; then touch "$dir/done"; echo "ppo $name, seed $seed: done"
        else echo "ppo $name, seed $seed: FAILED (see $dir/log.txt)"; fi
    done
done
python - "$OUT" <<'PY'
import sys
from experiments.table import last
for a in ("completeness", "faithfulness", "recommendation", "hallucination", "fluency", "brevity"):
    m = last(f"{sys.argv[1]}/rm_{a}", "spearman_aspect")
    print(f"reward model {a}: Spearman with its aspect {m['spearman_aspect']:.3f}, gain {m['reward_gain']:.3g}")
PY
# each finished PPO run's last held-out eval, mean ± standard deviation over seeds
python -m experiments.table --head="aspect weights" --split=test --done --spread=sd \
    --keys=gold,gold/completeness,gold/faithfulness,gold/recommendation,gold/hallucination,sycophancy,kl \
    --row "all 1 (gold's weighting)" "$OUT/ppo_gold_s*" \
    --row "faithfulness 0" "$OUT/ppo_nofaith_s*" \
    --row "hallucination 0" "$OUT/ppo_nohalluc_s*" \
    --row "one pairwise reward model (default)" "$OUT/ppo_single_s*"
