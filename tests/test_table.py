"""experiments/table.py: mean +- standard error (and deviation) on hand numbers, its readers of
metrics.jsonl, and the markdown table its command prints from two tiny hand-made runs."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

from configurator import UserError
from experiments.table import by_iter, cell, last, markdown, mean_sd, mean_se

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mean_se_by_hand():
    # [1, 2, 3]: mean 2, sample variance ((1-2)^2 + 0 + (3-2)^2) / 2 = 1, se = 1 / sqrt(3)
    assert mean_se([1, 2, 3]) == (2, pytest.approx(1 / math.sqrt(3)))
    assert mean_se([1, 2, 3])[1] == pytest.approx(0.5773502691896258)
    assert mean_sd([1, 2, 3]) == (2, pytest.approx(1.0))
    assert mean_se([0.5]) == (0.5, 0.0) and mean_sd([0.5]) == (0.5, 0.0)  # one value: no spread
    assert mean_se([1.0, 1.2]) == (pytest.approx(1.1), pytest.approx(0.1))  # two: se = |a - b| / 2


def test_cell():
    assert cell([1, 2, 3]) == "2.00 ± 0.58" and cell([1, 2, 3], ".3f", spread="sd") == "2.000 ± 1.000"
    assert cell([0.5]) == "0.50"  # one value: the value alone
    assert cell([]) == "-" and cell([None, float("nan")]) == "-"  # nothing logged
    assert cell([1, None, 3, float("nan")]) == cell([1, 3])  # runs that did not log it are left out
    assert cell([4800, 4812], ",.0f", spread="sd") == "4,806 ± 8"


def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def two_runs(root):
    """Two seeds of a PPO-like run: held-out evals (split test) and train lines with other numbers."""
    for seed, (g0, g1, kl) in ((1, (0.1, 0.5, 2.0)), (2, (0.2, 0.7, 4.0))):
        write(root / f"ppo_s{seed}" / "metrics.jsonl", [
            {"iter": 0, "split": "test", "gold": g0, "kl": 0.0},
            {"iter": 5, "split": "train", "gold": 9.0, "kl": 9.0, "loss": 1.0},
            {"iter": 10, "split": "test", "gold": g1, "kl": kl},
            {"iter": 10, "split": "train", "gold": -9.0, "kl": -9.0, "loss": 0.5}])


def test_readers(tmp_path):
    two_runs(tmp_path)
    run = tmp_path / "ppo_s1"
    assert last(run, "gold") == {"iter": 10, "split": "train", "gold": -9.0, "kl": -9.0, "loss": 0.5}
    assert last(run, "gold", split="test")["gold"] == 0.5 and last(run / "metrics.jsonl", "loss")["loss"] == 0.5
    assert last(run, "spearman") is None and last(tmp_path / "nope", "gold") is None
    assert {k: r["gold"] for k, r in by_iter(run, split="test").items()} == {0: 0.1, 10: 0.5}
    assert markdown(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_table_command(tmp_path):
    two_runs(tmp_path)
    (tmp_path / "ppo_s1" / "done").touch()
    cmd = [sys.executable, "-m", "experiments.table", "--keys=gold,kl", "--split=test", "--head=method | note",
           "--row", "PPO | both seeds", str(tmp_path / "ppo_s*"), "--row", "none | -", str(tmp_path / "dpo_s*")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    # the last held-out evals: gold 0.5, 0.7 (mean 0.6, se 0.1), KL 2, 4 (mean 3, se 1)
    assert r.stdout.splitlines() == ["| method | note | gold | kl | seeds |", "|---|---|---|---|---|",
                                     "| PPO | both seeds | 0.60 ± 0.10 | 3.00 ± 1.00 | 2 |",
                                     "| none | - | - | - | 0 |"]
    # the standard deviation, other column names, and only the finished run (its `done` file)
    r = subprocess.run(cmd + ["--spread=sd", "--names=gold (held out) | KL", "--spec=.3f"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.stdout.splitlines()[:3] == ["| method | note | gold (held out) | KL | seeds |", "|---|---|---|---|---|",
                                         "| PPO | both seeds | 0.600 ± 0.141 | 3.000 ± 1.414 | 2 |"]
    r = subprocess.run(cmd + ["--done"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "| PPO | both seeds | 0.50 | 2.00 | 1 |" in r.stdout
    # --last: each run's last row that has `loss` (the train line at iteration 10); the default header
    r = subprocess.run(cmd[:4] + ["--last=loss", "--row", "PPO", str(tmp_path / "ppo_s*")], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.stdout.splitlines() == ["| run | gold | kl | seeds |", "|---|---|---|---|",
                                     "| PPO | -9.00 ± 0.00 | -9.00 ± 0.00 | 2 |"]


@pytest.mark.parametrize("content, says", [(b'{"iter": 0, "gold": 1.0}\n\xff\xfe bad\n', r"is not UTF-8 text \(.*:2\)"),
                                           (b'{"iter": 0, "gold": 1.0}\n{"iter": 1, "gold"\n', r"malformed JSON .*\(.*:2\)")])
def test_a_bad_metrics_file_is_one_line(tmp_path, content, says):
    write(tmp_path / "ppo_s1" / "metrics.jsonl", [])
    (tmp_path / "ppo_s1" / "metrics.jsonl").write_bytes(content)
    with pytest.raises(UserError, match=says):
        last(tmp_path / "ppo_s1", "gold")
    r = subprocess.run([sys.executable, "-m", "experiments.table", "--keys=gold", "--row", "PPO",
                        str(tmp_path / "ppo_s*")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and re.search("^error: .*" + says, r.stderr), r.stderr
