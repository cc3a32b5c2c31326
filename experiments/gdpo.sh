#!/usr/bin/env bash
# GDPO against GRPO on the weighted sum (issue 36; GDPO: arXiv 2601.05242), on the built-in task with gold's
# six parts as six rewards (weight 1 each, so their sum is gold exactly): `--reward_agg=sum` normalises the
# sum within each group (GRPO on gold itself, the same advantages), `--reward_agg=gdpo` normalises each part
# within its group, sums, then normalises over the batch. grpo.py's defaults otherwise (the demo's budget).
# Reports held-out gold, each part and the KL to SFT at the end of each run, mean +- standard error over
# seeds. Needs an SFT model (default out/sft/ckpt.pt: python sft.py). A finished run is skipped (the script
# resumes); one run at a time (OMP_NUM_THREADS=1).
#   bash experiments/gdpo.sh ["1 2 3"] [sft checkpoint]
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2 3"}
SFT=${2:-out/sft/ckpt.pt}
OUT=out/gdpo
PARTS=gold/completeness,gold/faithfulness,gold/recommendation,gold/hallucination,gold/fluency,gold/brevity
for seed in $SEEDS; do
    for agg in sum gdpo; do
        dir=$OUT/${agg}_s$seed
        if [ -f "$dir/done" ]; then continue; fi
        rm -rf "$dir"; mkdir -p "$dir"
        if python grpo.py --out_dir="$dir" --sft_path="$SFT" --seed="$seed" --reward_fns="$PARTS" \
                --reward_agg="$agg" > "$dir/log.txt" 2>&1; then
            touch "$dir/done"; echo "$agg, seed $seed: done"
        else
            echo "$agg, seed $seed: FAILED (see $dir/log.txt)"
        fi
    done
done
keys=gold,gold/completeness,gold/faithfulness,gold/recommendation,gold/hallucination,gold/fluency,gold/brevity,kl
python -m experiments.table --done --keys="$keys" --head="advantage" \
    --names="gold|completeness|faithfulness|recommendation|hallucination|fluency|brevity|KL to SFT" \
    --row "GRPO, the sum normalised (= GRPO on gold)" "$OUT/sum_s*" \
    --row "GDPO, each part normalised, then the batch" "$OUT/gdpo_s*"
