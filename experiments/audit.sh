#!/usr/bin/env bash
# RESULTS 4.3: the preference audit (audit.py) of the default feedback at two labeler noise levels
# (feedback.py --label_temperature), pairwise labels and rankings, with a reward model's agreement with the
# same labels beside the bound any scalar reward can reach. Needs an SFT model and a reward model (default:
# the demo's). A finished feedback run is skipped:
#   bash experiments/audit.sh [sft checkpoint] [reward checkpoint]    # -> out/audit/, then the table
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SFT=${1:-out/sft/ckpt.pt}
RM=${2:-out/reward/ckpt.pt}
OUT=${OUT:-out/audit}
for f in "$SFT" "$RM"; do [ -f "$f" ] || { echo "error: no checkpoint at $f (bash demo.sh)" >&2; exit 2; }; done
mkdir -p "$OUT"
source experiments/step.sh  # step DIR LOG python STAGE.py ARGS...: skipped when DIR/done exists

echo "| \`--label_temperature\` | labels | prompts with an intransitive cycle | labels any reward must contradict | best possible accuracy | reward model's agreement |"
echo "|---|---|---|---|---|---|"
for t in 0.25 1.0; do
    step "$OUT/feedback_t$t" "$OUT/feedback_t$t.log" python feedback.py --policy_path="$SFT" --label_temperature="$t" \
        || exit 1
    for kind in pairwise rankings; do
        log="$OUT/audit_t${t}_$kind.txt"
        python audit.py --data_path="$OUT/feedback_t$t/${kind}_train.jsonl" --reward_path="$RM" > "$log" 2>&1 \
            || { echo "error: audit.py failed, see $log" >&2; exit 1; }
        # the numbers of audit.py's lines: "... N pairwise labels over P prompts", "... intransitive cycle: C",
        # "... to reverse ...: R; ...", "... more than A of these labels" (or "agreeing with A"), "agrees with M"
        awk -v t="$t" -v kind="$kind" '
            / pairwise labels over / { for (i = 1; i <= NF; i++) { if ($i == "rows") rows = $(i - 1); if ($i == "pairwise") n = $(i - 1); if ($i == "over") p = $(i + 1) } }
            /intransitive cycle:/ { c = $NF }
            /to reverse/ { r = $0; sub(/.*: (at most )?/, "", r); sub(/;.*/, "", r) }
            /of these labels|of the labels exists/ { for (i = 1; i <= NF; i++) if ($i ~ /^[01]\.[0-9]+$/) a = $i }
            / agrees with / { m = $(NF - 2) }
            END { printf "| %s | %s %s (%s pairs) | %s of %s | %s | %.3f | %.3f |\n", t, rows, kind, n, c, p, r, a, m }' "$log"
    done
done
