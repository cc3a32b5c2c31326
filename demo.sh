#!/usr/bin/env bash
# The whole RLHF pipeline on the built-in review task, on whatever this machine has (a few minutes a
# stage on 2 CPU cores). Each stage reads the previous stage's checkpoint from out/. It reruns every stage
# from scratch: each is passed --overwrite=True and replaces what an earlier demo left in out/.
#   bash demo.sh             # seed 1337 (every stage's default)
#   bash demo.sh --seed=3    # hands the seed to every stage
set -euo pipefail
cd "$(dirname "$0")"
seed=1337
for arg in "$@"; do
  case "$arg" in
    --seed=*) seed="${arg#--seed=}" ;;
    *) echo "error: unknown argument $arg (demo.sh takes only --seed=N)" >&2; exit 2 ;;
  esac
done
s="--seed=$seed"
w="--overwrite=True"
python sft.py "$s" $w                  # 1. supervised fine-tuning on demonstrations  -> out/sft
python feedback.py "$s" $w             # 2a. simulated human feedback on SFT samples   -> out/feedback
python reward.py "$s" $w               # 2b. reward model from that feedback           -> out/reward
python ppo.py "$s" $w                  # 3a. PPO against the reward model             -> out/ppo
python dpo.py "$s" $w                  # 3b. DPO on the same preference data           -> out/dpo
python grpo.py "$s" $w                 # 3c. GRPO                                      -> out/grpo
python sample.py "$s" $w --best_of=16  # 3d. best-of-N with the reward model           -> out/sample
python sample.py "$s" --init_from=out/ppo --max_prompts=5   # look at what PPO learned
