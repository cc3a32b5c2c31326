"""Nothing is lost without a word (common.claim_out_dir): a fresh run never replaces what an earlier run left
in its --out_dir unless --overwrite=True, no run writes into the folder of one of its inputs, a resume keeps
the checkpoint's architecture and says what else changed, and metrics.jsonl after a resume holds every
iteration once (and plot.py reads it whole). Tiny SFT runs of a few seconds each."""
import json
import os
import shutil

import pytest
import torch

import common
import plot
from configurator import UserError
from conftest import run

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--batch_size=8", "--n_demos=200", "--eval_prompts=4",
        "--n_print=0", "--log_interval=5", "--eval_interval=10"]


@pytest.fixture(scope="module")
def tiny_sft(tmp_path_factory):
    """A 20-step SFT run of a 1-layer model: ckpt.pt at iteration 20 and its metrics.jsonl."""
    out = str(tmp_path_factory.mktemp("tiny") / "sft")
    run("sft.py", *TINY, f"--out_dir={out}", "--max_iters=20")
    return out


@pytest.fixture
def sft_copy(tiny_sft, tmp_path):
    """A copy of tiny_sft this test may change."""
    return shutil.copytree(tiny_sft, str(tmp_path / "sft"))


def snapshot(path):
    with open(path, "rb") as f:
        return f.read(), os.stat(path).st_mtime_ns


def iters(out_dir):
    return [r["iter"] for r in map(json.loads, open(os.path.join(out_dir, "metrics.jsonl"))) if "iter" in r]


def one_line_refusal(p, *named):
    """Exit 2, no traceback, one line `error: ...` naming each of `named`."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(lines) == 1, p.stderr[-2000:]
    assert lines[0].startswith("error: ") and all(n in lines[0] for n in named), lines[0]
    return lines[0]


def test_fresh_run_refuses_an_earlier_checkpoint_overwrite_replaces_it(sft_copy):
    ckpt, before = os.path.join(sft_copy, "ckpt.pt"), snapshot(os.path.join(sft_copy, "ckpt.pt"))
    p = run("sft.py", *TINY, f"--out_dir={sft_copy}", "--max_iters=10", ok=False)
    one_line_refusal(p, sft_copy, "--overwrite=True", "--init_from=resume")
    assert snapshot(ckpt) == before
    run("sft.py", *TINY, f"--out_dir={sft_copy}", "--max_iters=10", "--overwrite=True")
    assert snapshot(ckpt)[0] != before[0]
    assert iters(sft_copy) == [0, 5, 10, 10]  # metrics.jsonl started anew (not appended to the 20-step run's)


def test_out_dir_of_an_input_refuses_even_with_overwrite(sft_copy, tmp_path):
    ckpt, before = os.path.join(sft_copy, "ckpt.pt"), snapshot(os.path.join(sft_copy, "ckpt.pt"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(dict(prompt="p", chosen="a", rejected="b")) + "\n")
    p = run("reward.py", f"--out_dir={sft_copy}", f"--sft_path={ckpt}", f"--data_path={pairs}", "--overwrite=True",
            ok=False)
    one_line_refusal(p, "--sft_path", "--overwrite=True")
    assert snapshot(ckpt) == before
    # in-process: a folder, one of several comma-separated paths, a data file an output would replace
    cases = [(dict(policy_path=sft_copy), ("policy_path",), common.RUN_OUTPUTS),
             (dict(init_from=f"{sft_copy}/policy.pt"), ("init_from",), common.RUN_OUTPUTS),  # the folder of a .pt
             (dict(reward_path=f"{tmp_path}/rm/ckpt.pt,{sft_copy}/ckpt.pt"), ("reward_path",), common.RUN_OUTPUTS),
             (dict(pairs_path=f"{tmp_path}/x/pairwise_train.jsonl"), ("pairs_path",), ("pairwise_train.jsonl",))]
    for i, (config, inputs, outputs) in enumerate(cases):
        out = sft_copy if i < 3 else str(tmp_path / "x")
        with pytest.raises(UserError, match=f"--{inputs[0]}="):
            common.claim_out_dir(out, dict(config, overwrite=True), inputs, outputs)
    common.claim_out_dir(str(tmp_path / "y"), dict(pairs_path=f"{tmp_path}/y/mine.jsonl", overwrite=False),
                         ("pairs_path",), ("pairwise_train.jsonl",))  # a data file nothing replaces: fine
    assert snapshot(ckpt) == before


def test_resume_refuses_changed_architecture_prints_other_changes(sft_copy, capsys):
    ckpt, before = os.path.join(sft_copy, "ckpt.pt"), snapshot(os.path.join(sft_copy, "ckpt.pt"))
    p = run("sft.py", *TINY, f"--out_dir={sft_copy}", "--init_from=resume", "--max_iters=30", "--n_layer=2", ok=False)
    one_line_refusal(p, "n_layer=1", "--n_layer=2")
    assert snapshot(ckpt) == before
    config = {**torch.load(ckpt, weights_only=True)["config"], "init_from": "resume", "lr": 3e-4,
              "max_iters": 30}
    common.claim_out_dir(sft_copy, config)
    assert "resuming with changed keys: max_iters 20 -> 30, lr 0.002 -> 0.0003" in capsys.readouterr().out


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    os.makedirs(tmp_path / "empty")  # (a folder without ckpt.pt was read as a Hugging Face model)
    p = run("sft.py", f"--out_dir={tmp_path}/empty", "--init_from=resume", ok=False)
    one_line_refusal(p, f"no checkpoint in {tmp_path}/empty (ckpt.pt) to resume from", "without --init_from=resume")


def test_metrics_after_a_resume_hold_every_iteration_once(sft_copy, tmp_path):
    whole = str(tmp_path / "whole")
    run("sft.py", *TINY, f"--out_dir={whole}", "--max_iters=40")
    rows = open(os.path.join(whole, "metrics.jsonl")).readlines()
    with open(os.path.join(sft_copy, "metrics.jsonl"), "a") as f:  # as if killed at iteration 30, a line half written
        f.writelines([r for r in rows if 20 < json.loads(r)["iter"] <= 30] + [rows[-1][:20]])
    run("sft.py", *TINY, f"--out_dir={sft_copy}", "--init_from=resume", "--max_iters=40")
    assert iters(sft_copy) == iters(whole) == [0, 5, 10, 10, 15, 20, 20, 25, 30, 30, 35, 40, 40]
    rows = [json.loads(r) for r in open(os.path.join(sft_copy, "metrics.jsonl"))]
    assert plot.read_metrics(sft_copy) == rows  # plot.py draws the whole resumed run


def test_plot_reads_a_file_resumed_before_the_cut_whole():
    """Files written before metrics.jsonl was cut on resume repeat the iterations after the checkpoint: the
    later rows replace them, the earlier ones stay; a fresh run appended to a file replaces it all."""
    a = [{"iter": i, "loss": 1.0} for i in (0, 10, 20, 30, 40)]  # killed at 40, the checkpoint at 20
    b = [{"iter": i, "loss": 2.0} for i in (30, 40, 50)]  # the resumed run
    assert plot.whole_run(a + b) == a[:3] + b
    assert plot.whole_run([{"config": {}}] + a + [{"iter": 0, "loss": 3.0}]) == [{"config": {}}, {"iter": 0, "loss": 3.0}]
    assert plot.whole_run(a) == a
