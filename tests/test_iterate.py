"""experiments/iterated_rlhf.sh (iterated online RLHF): two tiny rounds, in which round 2's reward model
trains on every label of round 1 plus the new ones, of the round-1 policy's samples; PPO continues across
rounds; a rerun skips finished rounds; bad arguments are one-line errors with exit status 2."""
import os
import subprocess
import sys

import pytest

from common import load_model
from conftest import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def iterate(*args):
    """bash experiments/iterated_rlhf.sh ARGS, its `python` the one running the tests (first on PATH)."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", os.path.join(ROOT, "experiments", "iterated_rlhf.sh"), *args], capture_output=True, text=True,
                          timeout=900, env=env)


def lines(path):
    with open(path) as f:
        return f.read().splitlines()


def test_two_rounds(sft_dir, tmp_path):
    out = str(tmp_path / "it")
    tiny = [f"--sft_path={os.path.join(sft_dir, 'ckpt.pt')}", f"--out_dir={out}", "--rounds=2", "--ppo_iters=2",
            "--reward.max_iters=5", "--reward.n_norm=32", "--reward.n_eval=1", "--reward.eval_interval=5",
            "--feedback.n_samples=2", f"--feedback.anchor_path={os.path.join(sft_dir, 'ckpt.pt')}",
            "--batch_size=8", "--eval_repeats=1", "--n_print=1"]
    p = iterate(*tiny)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r1, r2 = lines(f"{out}/round1/feedback/pairwise_train.jsonl"), lines(f"{out}/round2/feedback/pairwise_train.jsonl")
    data2 = lines(f"{out}/round2/pairs.jsonl")
    assert r1 and r2 and data2 == r1 + r2  # every label of round 1 is in round 2's reward data
    assert lines(f"{out}/round1/pairs.jsonl") == r1
    assert f"label samples of {out}/round1/ppo.ckpt.pt" in p.stdout  # round 2 labels the round-1 policy's samples
    assert f"reward model on {len(r1) + len(r2)} pairs" in p.stdout
    assert f"(the last 1 of each group from {os.path.join(sft_dir, 'ckpt.pt')})" in p.stdout  # --feedback.* reaches feedback.py
    # one PPO run, continued: iterations 1..4, each round's reward model in turn
    evals = [m for m in read_metrics(f"{out}/ppo") if m.get("split") == "test"]
    assert [m["iter"] for m in evals] == [0, 2, 4]
    assert load_model(f"{out}/round1/ppo.ckpt.pt")[2]["iter_num"] == 2
    assert load_model(f"{out}/round2/ppo.ckpt.pt")[2]["iter_num"] == 4
    assert load_model(f"{out}/ppo")[2]["config"]["reward_path"] == f"{out}/round2/reward/ckpt.pt"
    p = iterate(*tiny)  # finished rounds are skipped
    assert p.returncode == 0 and "round 1: done already" in p.stdout and "round 2: done already" in p.stdout


@pytest.mark.parametrize("args, message", [
    (["--rounds=0"], "error: --rounds=0: must be a whole number >= 1"),
    (["--ppo_iters=x"], "error: --ppo_iters=x: must be a whole number >= 1"),
    (["rounds=2"], "error: unknown argument rounds=2"),
    (["--sft_path=nowhere/ckpt.pt"], "error: nowhere/ckpt.pt: no SFT checkpoint here"),
])
def test_bad_arguments(tmp_path, args, message):
    p = iterate(f"--out_dir={tmp_path}/o", *args)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()] and p.stderr.startswith(message), p.stderr
