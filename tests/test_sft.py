"""sft.py end to end: learning on the built-in task, resume, your own JSONL, bad input, DDP;
sample.py on the result."""
import json
import math
import os
import shutil

import pytest
import torch

import data
import sample
import sft
from common import load_checkpoint, load_model, model_args_of, save_checkpoint
from conftest import assert_same_weights, last_eval, read_metrics, run

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=48", "--batch_size=8", "--eval_prompts=8",
        "--log_interval=2", "--n_demos=200", "--max_new_tokens=16"]


def test_sft_learns_the_task(sft_dir):
    evals = [m for m in read_metrics(sft_dir) if "gold" in m]
    before, after = evals[0], evals[-1]
    print(f"before SFT: {before}\nafter SFT: {after}")
    assert before["iter"] == 0 and before["parse"] < 0.1 and before["gold"] < -0.5
    assert after["parse"] >= 0.8, "SFT samples should be fluent in the task grammar"
    assert after["gold"] > before["gold"] + 0.8
    assert after["reads_prompt"] > 0.3 and after["gold/faithfulness"] > 0  # it reads its notes, not one review for all
    assert after["val_loss"] < 0.5 * before["val_loss"]
    ck = load_checkpoint(sft_dir)
    assert set(ck) >= {"model", "model_args", "optimizer", "iter_num", "config", "vocab"}
    assert ck["iter_num"] == 1200 and ck["config"]["max_iters"] == 1200


def test_sft_resumes(sft_dir, tmp_path):
    out = str(tmp_path / "resumed")
    shutil.copytree(sft_dir, out)
    run("sft.py", f"--out_dir={out}", "--init_from=resume", "--max_iters=1210", "--eval_interval=1210",
        "--log_interval=5", "--eval_prompts=8", "--fused_lm_head=True")  # (and the fused lm_head path runs)
    iters = [m["iter"] for m in read_metrics(out)]
    assert iters[-3:] == [1205, 1210, 1210] and load_checkpoint(out)["iter_num"] == 1210


def test_sft_on_jsonl_with_full_vocabulary(tmp_path):
    f = tmp_path / "d.jsonl"
    rows = [{"prompt": "Say hi.", "completion": " Hi there!"},  # one format per file (tests/test_formats.py)
            {"prompt": "Count to three.", "completion": " 1 2 3"}]
    f.write_text("\n".join(json.dumps(r) for r in rows * 10))
    out = str(tmp_path / "o")
    run("sft.py", f"--out_dir={out}", f"--data_path={f}", "--template=instruction", "--max_iters=3",
        "--eval_interval=3", *TINY)
    model, vocab, ck = load_model(out)
    assert vocab is None and model.config.vocab_size == 50257 and ck["iter_num"] == 3


@pytest.mark.parametrize("content, msg", [
    ('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": }\n', "malformed JSON"),
    ("", "empty dataset"),
    ('{"prompt": "a"}\n', "missing field"),
    (json.dumps({"prompt": "word " * 60, "completion": "b"}), "longer than the context"),
])
def test_sft_bad_data(tmp_path, content, msg):
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    p = run("sft.py", f"--out_dir={tmp_path}", f"--data_path={f}", "--max_iters=1", *TINY, ok=False)
    assert p.returncode == 2 and msg in p.stderr and "d.jsonl" in p.stderr, p.stderr[-2000:]


def test_sft_bad_checkpoints(tmp_path, sft_dir):
    p = run("sft.py", f"--init_from={tmp_path}/nothing", f"--out_dir={tmp_path}/o", ok=False)
    assert p.returncode != 0 and "no checkpoint here" in p.stderr
    f = tmp_path / "d.jsonl"  # the built-in task's compact vocabulary cannot read other text
    f.write_text(json.dumps({"prompt": "Hello", "completion": " world"}))
    p = run("sft.py", f"--init_from={sft_dir}", f"--data_path={f}", "--max_iters=1", f"--out_dir={tmp_path}/o", ok=False)
    assert p.returncode != 0 and "compact vocabulary" in p.stderr


def test_sft_ddp_two_processes_equal_one_process(tmp_path):
    """2 processes at batch 4 train exactly like 1 process at batch 8: same global batches, same loss
    normalisation (the global token count), so the weights agree to float rounding."""
    out, one = str(tmp_path / "ddp"), str(tmp_path / "one")
    run("sft.py", f"--out_dir={out}", "--max_iters=4", "--eval_interval=4", *TINY, "--batch_size=4", torchrun=2)
    assert load_checkpoint(out)["iter_num"] == 4
    assert [m["iter"] for m in read_metrics(out)].count(4) == 2  # rank 0 alone logs: one train, one eval line
    run("sft.py", f"--out_dir={one}", "--max_iters=4", "--eval_interval=4", *TINY, "--batch_size=8")
    assert_same_weights(out, one)


def test_sample_and_best_of_n(sft_dir, tmp_path):
    p = run("sample.py", f"--init_from={sft_dir}", "--max_prompts=6", "--max_new_tokens=30", f"--out_dir={tmp_path}/s")
    assert p.stdout.count("gold") >= 7 and "parse" in p.stdout.splitlines()[-1]
    # a stand-in reward model (SFT body, untrained head): checks the plumbing; test_reward checks gains
    rm, vocab, _ = load_model(sft_dir, scalar_head=True)
    save_checkpoint(str(tmp_path / "rm" / "ckpt.pt"), dict(model=rm.state_dict(), model_args=model_args_of(rm),
                    optimizer={}, iter_num=0, config={}, vocab=vocab, reward_gain=1.0, reward_bias=0.0))
    out = str(tmp_path / "bon")
    run("sample.py", f"--init_from={sft_dir}", f"--reward_path={tmp_path}/rm", "--best_of=4", "--max_prompts=5",
        f"--out_dir={out}")
    rows = read_metrics(out)
    assert [r["n"] for r in rows] == [1, 2, 4]
    assert [r["kl"] for r in rows] == pytest.approx([0.0, math.log(2) - 0.5, math.log(4) - 0.75], abs=1e-4)
    # greedy decoding draws N identical responses: best-of-N refuses (its analytic KL would be wrong)
    p = run("sample.py", f"--init_from={sft_dir}", f"--reward_path={tmp_path}/rm", "--best_of=4", "--temperature=0",
            f"--out_dir={out}", ok=False)
    assert p.returncode != 0 and "--temperature=0" in p.stderr and "best-of-N needs sampling" in p.stderr


def test_best_of_n_picks_the_top_score_of_each_prompts_prefix():
    scores = [0.1, 0.5, -1.0, 0.3, 2.0, 1.0, 0.0, 3.0]  # two prompts, 4 samples each
    assert sample.best_of_n(scores, 4, 1) == [0, 4]
    assert sample.best_of_n(scores, 4, 2) == [1, 4]
    assert sample.best_of_n(scores, 4, 4) == [1, 7]


def test_sft_batch_shift_and_mask():
    """x is the input, y the next token, kept only on the completion: ids (5, 6 | 7, 8, 9) with a
    2-token prompt -> x = 5 6 7 8, y = - 7 8 9; a shorter row is right-padded (x with eot, y with -100)."""
    x, y = data.collate_completions([([5, 6, 7, 8, 9], 2), ([1, 2, 3], 1)], eot=0)
    assert x.tolist() == [[5, 6, 7, 8], [1, 2, 0, 0]]
    assert y.tolist() == [[-100, 7, 8, 9], [2, 3, -100, -100]]
