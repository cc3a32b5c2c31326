#!/usr/bin/env bash
# The whole RLHF pipeline on the built-in review task, on whatever this machine has (a few minutes a
# stage on 2 CPU cores). Each stage reads the previous stage's checkpoint from out/.
set -euo pipefail
cd "$(dirname "$0")"
python sft.py                    # 1. supervised fine-tuning on demonstrations  -> out/sft
python reward.py                 # 2. simulated human feedback + reward model   -> out/reward
python ppo.py                    # 3a. PPO against the reward model             -> out/ppo
python dpo.py                    # 3b. DPO on the same preference data           -> out/dpo
python grpo.py                   # 3c. GRPO                                      -> out/grpo
python sample.py --best_of=16    # 3d. best-of-N with the reward model           -> out/sample
python sample.py --init_from=out/ppo --max_prompts=5   # look at what PPO learned
