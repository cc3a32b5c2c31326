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
        python audit.py --data_path="$OUT/feedback_t$t/${kind}_train.jsonl" --reward_path="$RM" --json_line=True > "$log" 2>&1 \
            || { echo "error: audit.py failed, see $log" >&2; exit 1; }
        tail -n 1 "$log" | python -c '
import json, sys
j = json.loads(sys.stdin.read())  # audit.py --json_line: its numbers, on its last line
bound = ("" if j["exact"] else "at most ") + str(j["min_reversals"])
print("| {t} | {rows:,} {kind} ({n_labels:,} pairs) | {prompts_with_cycles} of {prompts} | {bound} | {max_agreement:.3f} | "
      "{reward_agreement:.3f} |".format(t=sys.argv[1], bound=bound, **j))' "$t"
    done
done
