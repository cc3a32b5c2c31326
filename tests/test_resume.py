"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed with --init_from=resume ends
bitwise equal (weights and optimizer state) to the same run left alone, for every training stage: the
checkpoint holds the data position and every random generator (common.rng_state)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import small_test_pairs, ROOT

SFT = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--batch_size=8", "--n_demos=500", "--eval_prompts=4",
       "--log_interval=10", "--n_print=0"]


def _cmd(script, args, torchrun):
    if torchrun:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
                script, *args]
    return [sys.executable, script, *args]


def _env(torchrun):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    return env


def run_to_end(script, args, torchrun=0):
    p = subprocess.run(_cmd(script, args, torchrun), cwd=ROOT, env=_env(torchrun), capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def kill_after_a_checkpoint(script, args, out, max_iters, torchrun=0):
    """Start the run, SIGKILL it (its whole process group) as soon as a checkpoint exists; return the
    iteration the checkpoint holds, which must be short of the end for the test to mean anything."""
    path = os.path.join(out, "ckpt.pt")
    p = subprocess.Popen(_cmd(script, args, torchrun), cwd=ROOT, env=_env(torchrun), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    while not os.path.exists(path):  # ends: the checkpoint appears, or the run exits (asserted)
        assert p.poll() is None, f"{script} exited before writing a checkpoint: {p.stderr.read()[-3000:]}"
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    it = torch.load(path, weights_only=True)["iter_num"]
    assert 0 < it < max_iters, f"the checkpoint holds iteration {it} of {max_iters}: nothing left to resume"
    return it


def assert_bitwise_equal(a, b, keys=("model",)):
    ca, cb = (torch.load(os.path.join(d, "ckpt.pt"), weights_only=True) for d in (a, b))
    assert ca["iter_num"] == cb["iter_num"]
    for key in keys:
        for k in ca[key]:
            assert torch.equal(ca[key][k], cb[key][k]), (key, k, (ca[key][k] - cb[key][k]).abs().max().item())
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i][n], sb[i][n]) for i in sa for n in sa[i])


def check_resume(tmp_path, script, args, max_iters, keys=("model",), torchrun=0, resume_args=()):
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    run_to_end(script, [*args, f"--out_dir={whole}", f"--max_iters={max_iters}"], torchrun)
    it = kill_after_a_checkpoint(script, [*args, f"--out_dir={cut}", f"--max_iters={max_iters}"], cut, max_iters, torchrun)
    run_to_end(script, [*args, *resume_args, f"--out_dir={cut}", f"--max_iters={max_iters}", "--init_from=resume"], torchrun)
    assert_bitwise_equal(whole, cut, keys)
    assert logged(cut) == logged(whole)  # metrics.jsonl: each iteration once (cut back to the checkpoint's)
    return it


def logged(out):
    """(iter, split, the keys) of every metrics.jsonl row: what was logged, without the timings' values."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [(r.get("iter"), r.get("split"), sorted(r)) for r in map(json.loads, f)]


def test_sft_resumes_bitwise(tmp_path):
    check_resume(tmp_path, "sft.py", [*SFT, "--eval_interval=20"], 300)


def test_sft_ddp_resumes_bitwise(tmp_path):
    check_resume(tmp_path, "sft.py", [*SFT, "--eval_interval=20"], 200, torchrun=2)


def test_reward_resumes_bitwise(sft_dir, reward_dir, tmp_path):
    fb = f"{reward_dir}/feedback"  # the fixture's simulated labels (the built-in path only adds sampling them)
    args = [f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={fb}/ties_train.jsonl", "--label_kind=ties",
            f"--test_path={small_test_pairs(reward_dir)}", "--eval_interval=10", "--log_interval=10", "--n_norm=16",
            "--n_eval=1", "--batch_size=8"]  # ties: the Rao-Kupper loss has a parameter of its own to restore
    check_resume(tmp_path, "reward.py", args, 60, keys=("model", "loss_params"))


def test_dpo_resumes_bitwise(sft_dir, reward_dir, tmp_path):
    args = [f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={reward_dir}/feedback/pairwise_train.jsonl",
            "--ref_mode=online", "--max_items=400", f"--val_path={small_test_pairs(reward_dir)}", "--batch_size=8", "--eval_interval=10", "--log_interval=10", "--eval_repeats=1",
            "--n_print=0"]
    check_resume(tmp_path, "dpo.py", args, 40)


def test_ppo_resumes_bitwise(sft_dir, reward_dir, tmp_path):
    args = [f"--sft_path={sft_dir}", f"--reward_path={reward_dir}", "--batch_size=8", "--n_minibatches=2",
            "--ppo_epochs=1", "--eval_repeats=1", "--n_print=0", "--eval_interval=2"]
    check_resume(tmp_path, "ppo.py", args, 12, keys=("model", "critic"))


def test_grpo_resumes_bitwise(sft_dir, tmp_path):
    args = [f"--sft_path={sft_dir}/ckpt.pt", "--reward_fns=gold", "--prompts_per_batch=2", "--group_size=4",
            "--minibatch_size=8", "--max_new_tokens=16", "--eval_repeats=1", "--n_print=0", "--eval_interval=2",
            "--log_interval=1"]
    check_resume(tmp_path, "grpo.py", args, 12)
