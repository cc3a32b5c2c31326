#!/usr/bin/env bash
# The README's GRPO-family table: every variant of grpo.py, 30 iterations, three seeds, gold reward, on the
# built-in task, against today's default. Needs out/sft/ckpt.pt (python sft.py). Runs one at a time
# (OMP_NUM_THREADS=1); a run whose final eval is already in its metrics.jsonl is skipped, so the script
# resumes. Then prints the table (mean +- standard error over seeds) of the variants run so far.
# Usage: bash experiments/grpo_variants.sh [seeds] [variants, e.g. "default gspo"; default: all]
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${1:-"1 2 3"}
ONLY=${2:-""}
OUT=out/variants
VARIANTS=(
  "default|"
  "gspo|--objective=gspo"
  "cispo|--objective=cispo"
  "reinforce++|--advantage=reinforce --kl_in=reward"
  "reinforce++-baseline|--advantage=reinforce_baseline"
  "dynamic_sampling|--dynamic_sampling=True"
  "overlong|--overlong_cache=8"
  "kl_in=reward|--kl_in=reward"
  "k3+|--kl_estimator=k3+"
  "k3_corrected|--kl_estimator=k3_corrected"
  "full|--kl_estimator=full"
)
# the default at every seed first (the noise floor), then the new variants seed-major (an interrupted run
# still has each at the first seeds), then 'full' (measured before: the KL table above)
JOBS=()
n=${#VARIANTS[@]}
for seed in $SEEDS; do JOBS+=("$seed|${VARIANTS[0]}"); done
for seed in $SEEDS; do for v in "${VARIANTS[@]:1:n-2}"; do JOBS+=("$seed|$v"); done; done
for seed in $SEEDS; do JOBS+=("$seed|${VARIANTS[n-1]}"); done
for job in "${JOBS[@]}"; do
    seed=${job%%|*}; v=${job#*|}
    name=${v%%|*}; flags=${v#*|}; dir=$OUT/$name/s$seed
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
    if grep -q '"iter": 30, "gold"' "$dir/metrics.jsonl" 2>/dev/null; then continue; fi
    rm -rf "$dir"; mkdir -p "$dir"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    if python grpo.py --out_dir="$dir" --seed="$seed" --max_iters=30 --eval_interval=30 $flags > "$dir/log.txt" 2>&1; then
      echo "$(date +%s.%N) - $start" | bc > "$dir/wall_s"
      echo "$name seed $seed: $(cat "$dir/wall_s") s"
    else
      echo "$name seed $seed: FAILED (see $dir/log.txt)"
    fi
done
python - "$OUT" "${VARIANTS[@]}" <<'PY'
import os, statistics, sys
from experiments.table import cell, markdown, read_rows
out, variants = sys.argv[1], [v.split("|", 1) for v in sys.argv[2:]]
se = lambda xs, spec: cell(xs, spec)  # mean ± standard error over seeds
table = []
for name, flags in variants:
    cols = {k: [] for k in ("gold", "kl", "entropy", "len", "zero", "rounds", "wall")}
    d = os.path.join(out, name)
    for s in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        rows = read_rows(os.path.join(d, s))
        final = [r for r in rows if r.get("iter") == 30 and "gold" in r]
        if not final or not os.path.exists(os.path.join(d, s, "wall_s")):
            continue
        train = [r for r in rows if "policy_loss" in r]
        cols["gold"].append(final[0]["gold"]); cols["kl"].append(final[0]["kl"])
        cols["len"].append(final[0]["response_len"]); cols["entropy"].append(train[-1]["entropy"])
        cols["rounds"].append(statistics.mean(r.get("gen_batches", 1) for r in train))  # this run's mean
        cols["zero"].append(train[-1]["zero_std_frac"]); cols["wall"].append(float(open(os.path.join(d, s, "wall_s")).read()))
    if not cols["gold"]:
        continue
    table.append([name, f"`{flags or '(none)'}`", se(cols["gold"], ".3f"), se(cols["kl"], ".2f"), se(cols["entropy"], ".2f"),
                  se(cols["len"], ".1f"), se(cols["zero"], ".2f"), se(cols["rounds"], ".2f"), se(cols["wall"], ".0f"),
                  len(cols["gold"])])
print(markdown(["variant", "flags", "gold", "KL to SFT", "entropy", "response length", "zero_std_frac",
                "rollouts / iter", "wall time (s)", "seeds"], table))
PY
