"""experiments/stages.py: RESULTS 2's tables from hand-made runs whose numbers are known: a stage's evaluations
over its iterations, the last evaluation per run, the whitening seeds' mean +- standard error, the reward
models' row with the length baseline, best-of-N per N, a run's seconds from stages.sh's times.tsv (its last
line); and a root with no finished SFT run refused in one line."""
import json
import os

import pytest

from configurator import UserError
from experiments import stages


def write(root, name, rows, done=True):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    if done:
        open(os.path.join(d, "done"), "w").close()


def ev(t, it, gold, kl=0.0, **more):
    """A held-out evaluation row at time t."""
    return dict(time=t, iter=it, gold=gold, kl=kl, parse=1.0, response_len=20.0, sycophancy=0.0, reads_prompt=0.5,
                distinct=90.0, **more)


def fake_root(root):
    with open(os.path.join(root, "times.tsv"), "w") as f:  # stages.sh's seconds per run; a rerun's line counts
        f.write("sft\t80\nreward\t50\nreward\t44\ndpo\t39\ngrpo\t28\nppo\t48\nsample\t5\n")
    write(root, "sft", [ev(0, 0, -1.0, val_loss=4.4), ev(80, 800, 0.33, val_loss=1.1)])
    write(root, "feedback", [{"time": 5, "iter": 0, "train/labels_acc_gold": 0.82, "n_pairwise": 5990,
                              "agreement/ties": 0.8}])
    rm = dict(acc_noisy=0.7, spearman=0.4, ece=0.03, **{"probe/length": 0.3, "probe/positivity": 0.05})
    write(root, "reward", [{"time": 100, "iter": 0, "acc_gold": 0.5},
                           {"time": 144, "iter": 200, "acc_gold": 0.634, "length_acc_noisy": 0.61,
                            "length_acc_gold": 0.645, "length_spearman": 0.2, **rm}])
    write(root, "rm_ties", [{"time": 10, "iter": 200, "acc_gold": 0.61, **rm}])
    write(root, "rm_likert_mse", [{"time": 10, "iter": 200, "acc_gold": 0.61, **rm}], done=False)  # still going
    test = lambda it, reward, gold, kl, parse: dict(time=it, iter=it, split="test", reward=reward, gold=gold, kl=kl,
                                                    parse=parse)
    write(root, "ppo", [test(0, 0.0, 0.33, 0.0, 1.0),
                        {"time": 1, "iter": 1, "split": "train", "reward": 0.5, "gold": 9.9},  # a train row: not an eval
                        test(20, 1.5, 0.44, 1.4, 0.9)])
    for s, (a, b) in enumerate(((0.4, 0.5), (0.5, 0.5), (0.6, 0.8)), 1):
        write(root, f"ppo_s{s}", [{"time": 0, "iter": 20, "split": "test", "gold": a, "kl": 1.0, "parse": 1.0}])
        write(root, f"ppo_whiten_s{s}", [{"time": 0, "iter": 20, "split": "test", "gold": b, "kl": 2.0, "parse": 1.0}])
    write(root, "dpo", [ev(0, 0, 0.33), ev(39, 100, 0.46, 0.77, **{"val_rewards/accuracies": 0.6})])
    train = lambda it, entropy, kl: dict(time=it, iter=it, entropy=entropy, kl=kl)
    write(root, "grpo", [ev(0, 0, 0.3), train(5, 0.4, 1.0), train(10, 0.2, 4.5), train(15, 0.1, 3.0),
                         ev(28, 20, 0.67, 2.95)])
    write(root, "sample", [dict(ev(3, None, 0.02 * n, kl), n=n, reward=0.1 * n) for n, kl in ((1, 0.0), (16, 1.84))])


def test_tables_by_hand(tmp_path, capsys):
    fake_root(str(tmp_path))
    stages.main([f"--root={tmp_path}"])
    out = capsys.readouterr().out
    assert "| 0 | 4.40 | -1.00 | 1.00 | 20.0 | 0.50 | 90 |" in out and "| 800 | 1.10 | 0.33 |" in out  # SFT per eval
    assert "| train/labels_acc_gold | 0.820 |" in out and "| n_pairwise | 5990 |" in out  # the feedback report's
    assert "agreement/ties" not in out  # (chosen numbers)
    # the reward models: the length baseline's row from the default's last eval; seconds 144 - 100
    assert "| length alone (the longer, or shorter, wins) | 0.610 | 0.645 | 0.200 |" in out
    assert "| `pairwise` / `bt` Bradley-Terry (default) | 0.700 | 0.634 | 0.400 | 0.030 | 0.30 | 0.05 | 44 |" in out
    assert "| `ties` / `rao_kupper` | 0.700 | 0.610 |" in out
    assert "`likert` / `mse`" not in out  # unfinished: no row
    # PPO over its evaluations (the train row left out): one column per eval
    assert "| iteration | 0 | 20 |" in out and "| gold | 0.33 | 0.44 |" in out and "| reward | 0.00 | 1.50 |" in out
    # whitening: 0.4, 0.5, 0.6 -> 0.500 ± 0.058; 0.5, 0.5, 0.8 -> 0.600 ± 0.100
    assert "| `False` (default) | 0.400, 0.500, 0.600 | 0.500 ± 0.058 | 1.00 ± 0.00 | 1.00 ± 0.00 |" in out
    assert "| `True` | 0.500, 0.500, 0.800 | 0.600 ± 0.100 | 2.00 ± 0.00 |" in out
    # DPO: the start is the first eval, the row the last; held-out implicit-reward accuracy
    assert "| SFT model (start) | 0.33 | 1.00 | 0.00 | - |" in out
    assert "| `sigmoid` (DPO, the default) | 0.46 | 1.00 | 0.77 | 0.600 | 39 |" in out
    # GRPO's KL table: last eval, last train log's entropy, the largest train-log KL
    assert "| `k3` (default) | 0.02 | 0.67 | 2.95 | 0.10 | 4.50 |" in out
    # best-of-N per N
    assert "| N | 1 | 16 |" in out and "| gold | 0.02 | 0.32 |" in out and "| KL (analytic) | 0.00 | 1.84 |" in out
    # side by side: the last eval of each run made
    assert "| GRPO, gold reward | 0.67 | 2.95 | 1.00 | 20.0 | 0.00 | 0.50 | 90.0 | 28 |" in out
    assert "GRPO, reward model" not in out and "(not run: " in out  # the runs not made: no row, no empty table
    assert "| best-of-16 with the reward model | 0.32 | 1.84 |" in out and "| 90.0 | 5 |" in out


def test_no_finished_sft_is_refused(tmp_path):
    write(str(tmp_path), "sft", [ev(0, 0, -1.0)], done=False)
    with pytest.raises(UserError, match="no finished SFT run"):
        stages.main([f"--root={tmp_path}"])
