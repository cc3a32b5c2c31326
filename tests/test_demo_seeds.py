"""experiments/demo_seeds.py: the demo-over-seeds tables from three hand-made seeds whose numbers are known:
the mean +- standard error per method, the differences paired by seed, and time to gold (a method's own
seconds plus the stages it needs upstream; labels: the pairs it consumed, none for GRPO on gold)."""
import json
import os

import pytest

from experiments import demo_seeds


def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def fake_seed(root, name, ppo_gold, dpo_gold, done=True):
    """One seed: stages of 10 s each back to back from t = 1000 (sft 1000-1010, feedback -1020, reward -1030,
    ppo -1040, dpo -1050, grpo -1060, sample -1070, grpo_rm -1080); PPO evaluated at 1032 and 1039, DPO at
    1049, GRPO at 1052 and 1059, GRPO on the reward model at 1078; 4 labelled pairs."""
    d = os.path.join(root, name)
    stages = ("sft", "feedback", "reward", "ppo", "dpo", "grpo", "sample", "grpo_rm")
    os.makedirs(d)
    with open(os.path.join(d, "times.tsv"), "w") as f:
        f.write("stage\tstart\tend\n" + "".join(f"{s}\t{1000 + 10 * i}\t{1010 + 10 * i}\n" for i, s in enumerate(stages)))
    write(os.path.join(d, "feedback", "pairwise_train.jsonl"), [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 4)
    write(os.path.join(d, "sft", "metrics.jsonl"), [{"iter": 0, "loss": 3.0}, {"time": 1009, "iter": 1200, "gold": 0.4}])
    write(os.path.join(d, "reward", "metrics.jsonl"), [{"iter": 200, "acc_gold": 0.65, "probe/length": 0.4,
                                                      "probe/positivity": 0.1}])
    write(os.path.join(d, "ppo", "metrics.jsonl"), [
        {"time": 1032, "iter": 0, "split": "test", "gold": 0.4, "kl": 0.0},
        {"time": 1035, "iter": 5, "split": "train", "reward": 1.0, "gold": 9.9},  # a train row: not an eval
        {"time": 1039, "iter": 30, "split": "test", "gold": ppo_gold, "kl": 2.0}])
    write(os.path.join(d, "dpo", "metrics.jsonl"), [{"time": 1049, "iter": 100, "gold": dpo_gold, "kl": 1.0}])
    write(os.path.join(d, "grpo", "metrics.jsonl"), [{"time": 1052, "iter": 0, "gold": 0.3, "kl": 0.0},
                                                     {"time": 1059, "iter": 20, "gold": 0.7, "kl": 3.0}])
    write(os.path.join(d, "sample", "metrics.jsonl"), [{"time": 1069, "n": 1, "gold": 0.3, "kl": 0.0},
                                                       {"time": 1069, "n": 16, "gold": 0.5, "kl": 1.84}])
    write(os.path.join(d, "grpo_rm", "metrics.jsonl"), [{"time": 1078, "iter": 20, "gold": 0.45, "kl": 4.0}])
    if done:
        open(os.path.join(d, "done"), "w").close()


def test_tables_by_hand(tmp_path, capsys):
    fake_seed(tmp_path, "s1", 0.6, 0.5)
    fake_seed(tmp_path, "s2", 0.7, 0.5)
    fake_seed(tmp_path, "s3", 0.8, 0.8)
    fake_seed(tmp_path, "s4", 0.0, 0.0, done=False)  # unfinished: left out
    demo_seeds.main([f"--root={tmp_path}"])
    out = capsys.readouterr().out
    # PPO 0.6, 0.7, 0.8: mean 0.70, SE 0.1 / sqrt(3) = 0.058; DPO 0.5, 0.5, 0.8: 0.60 ± 0.10
    assert ("| mean ± SE (3) | 0.40 ± 0.00 | 0.650 ± 0.000 | 0.40 ± 0.00 / 0.10 ± 0.00 | 0.70 ± 0.06 / 2.00 ± 0.00 | "
            "0.60 ± 0.10 / 1.00 ± 0.00 | 0.70 ± 0.00 / 3.00 ± 0.00 | 0.50 ± 0.00 / 1.84 ± 0.00 | 0.45 ± 0.00 / 4.00 ± 0.00 |") in out
    # paired PPO - DPO: 0.1, 0.2, 0.0 -> +0.100 ± 0.058 (|mean| / SE 1.7); unpaired SE sqrt(0.0577^2 + 0.1^2) = 0.115
    assert "| PPO - DPO | +0.100 ± 0.058 | 1.7 | 0.115 | no |" in out
    # PPO against best-of-16 (0.5 at every seed): 0.2 apart, more than 2 x 0.058
    assert "| PPO - best-of-16 | +0.200 ± 0.058 | 3.5 | 0.058 | yes |" in out
    # GRPO (0.7 at every seed) against DPO: unpaired SE 0.1, difference 0.1: not apart
    assert "| DPO - GRPO (gold reward) | -0.100 ± 0.100 | 1.0 | 0.100 | no |" in out
    assert "| GRPO (gold reward) - best-of-16 | +0.200 ± 0.000 | - | 0.000 | no |" in out  # no spread: no claim
    # time to gold: PPO's iter 30 at its own 1039 - 1030 = 9 s + sft, feedback, reward (30 s) = 39 s, 4 pairs;
    # DPO at 1049 - 1040 + 20 = 29 s; GRPO at 1059 - 1050 + 10 = 19 s, no labels; best-of-16 its whole stage + 30
    assert "| PPO | iter 30 | 39 | 4 | 0.70 ± 0.06 | 2.00 ± 0.00 |" in out
    assert "| DPO | iter 100 | 29 | 4 | 0.60 ± 0.10 | 1.00 ± 0.00 |" in out
    assert "| GRPO (gold reward) | iter 20 | 19 | 0 (verifiable reward) | 0.70 ± 0.00 | 3.00 ± 0.00 |" in out
    assert "| best-of-16 | N = 16 | 40 | 4 | 0.50 ± 0.00 | 1.84 ± 0.00 |" in out
    assert "| GRPO (RM reward) | iter 20 | 38 | 4 | 0.45 ± 0.00 | 4.00 ± 0.00 |" in out  # 1078 - 1070 + 30
    assert "whole pipeline per seed: 80 ± 0 s" in out


def test_no_finished_seed_is_one_line(tmp_path, capsys):
    fake_seed(tmp_path, "s1", 0.6, 0.5, done=False)
    with pytest.raises(SystemExit) as e:
        demo_seeds.main([f"--root={tmp_path}"])
    assert e.value.code == 2 and "no finished seed" in capsys.readouterr().err
