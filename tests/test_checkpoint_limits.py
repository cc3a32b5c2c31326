"""The constraints that need the checkpoint (issue 32): --max_new_tokens must leave a prompt room in the
context (block_size) of every model a sample passes through, every prompt must fit what is left, and the
user's text must be in the checkpoint's vocabulary (a compact one). Each stage checks them once its models
are loaded, before any step: one line naming the key and its range, or the file and line, exit 2."""
import json
import os
import re
import shutil

import pytest
import torch

from conftest import run

ROOM = (r"^error: --max_new_tokens=64: must be < 64, the context \(block_size\) of the {what}, which holds the "
        r"prompt too\. lower --max_new_tokens$")


def one_line(p, pattern):
    """Exit 2, no traceback, one stderr line matching `pattern`."""
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(lines) == 1, p.stderr[-3000:]
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("script, what", [
    ("sft.py", "model"), ("reward.py", r"SFT policy \(--sft_path\)"), ("ppo.py", "policy"), ("dpo.py", "policy"),
    ("grpo.py", "policy"), ("sample.py", "model"), ("feedback.py", "model"), ("rlaif.py", "model")])
def test_max_new_tokens_must_leave_room_for_a_prompt(sft_dir, reward_dir, tmp_path, script, what):
    """The fixture's SFT model reads 64 tokens: --max_new_tokens=64 leaves none. sft.py resumes its checkpoint
    (a value only a loaded model can refuse), and no stage trains a step first."""
    out, ckpt = tmp_path / "o", os.path.join(sft_dir, "ckpt.pt")
    args = {"sft.py": ["--init_from=resume", "--max_iters=700"],
            "reward.py": [f"--sft_path={ckpt}", f"--data_path={reward_dir}/feedback", "--max_iters=5"],
            "ppo.py": [f"--sft_path={ckpt}", f"--reward_path={reward_dir}", "--max_iters=1"],
            "dpo.py": [f"--sft_path={ckpt}", f"--data_path={reward_dir}/feedback/pairwise_train.jsonl",
                       "--max_items=64", "--max_iters=1"],
            "grpo.py": [f"--sft_path={ckpt}", "--max_iters=1"],
            "sample.py": [f"--init_from={sft_dir}"],
            "feedback.py": [f"--policy_path={ckpt}"],
            "rlaif.py": ["--mode=demos", f"--policy_path={ckpt}"]}[script]
    if script == "sft.py":
        out.mkdir()
        shutil.copy(ckpt, out / "ckpt.pt")
    p = run(script, *args, f"--out_dir={out}", "--max_new_tokens=64", "--device=cpu", ok=False, timeout=300)
    one_line(p, ROOM.format(what=what))
    assert not (out / "metrics.jsonl").exists()  # nothing ran (sft.py: its checkpoint untouched)
    assert script != "sft.py" or torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 1200


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def pairs(reward_dir, n=40):
    with open(os.path.join(reward_dir, "feedback", "pairwise_train.jsonl")) as f:
        return [json.loads(line) for line in f][:n]


def test_a_prompt_the_reward_model_cannot_read_is_refused_before_training(sft_dir, reward_dir, tmp_path):
    """No SFT policy to sample (--sft_path=''): the reward model's own context (64) must hold the prompt and a
    response; a 72-token prompt was cut to its first 64 tokens, and the reward read off a prompt token."""
    rows = pairs(reward_dir)
    rows[5]["prompt"] = " ".join(["Notes on the tea cafe."] * 12)  # 72 tokens
    data = write(tmp_path / "long.jsonl", rows)
    p = run("reward.py", "--sft_path=", f"--init_from={sft_dir}/ckpt.pt", f"--data_path={data}", "--max_iters=5",
            f"--out_dir={tmp_path}/o", "--device=cpu", ok=False, timeout=300)
    one_line(p, r"^error: the prompt has 72 tokens; the reward model reads 64 \(its block_size\), a response too "
                r"\(.*long\.jsonl:6\)\. shorten it$")
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_dpo_refuses_a_response_the_vocabulary_cannot_spell(sft_dir, reward_dir, tmp_path):
    """The compact vocabulary of the built-in task cannot spell "Quantum": the row is named (it was skipped)."""
    rows = pairs(reward_dir)
    rows[7]["chosen"] = " Quantum tea.<|endoftext|>"
    data = write(tmp_path / "oov.jsonl", rows)
    p = run("dpo.py", f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={data}", "--max_iters=1",
            f"--out_dir={tmp_path}/o", "--device=cpu", ok=False, timeout=300)
    one_line(p, r"^error: text has \[' Quantum'\], .* cannot spell \(.*oov\.jsonl:8\)")


def test_ppo_needs_room_in_the_reward_model_too(sft_dir, reward_dir, tmp_path):
    """A reward model of a shorter context (32) than the policy's (64): it scores prompt + response, so
    --max_new_tokens=40 is refused naming it (it was a traceback at the first rollout's score)."""
    ck = torch.load(os.path.join(reward_dir, "ckpt.pt"), weights_only=True)
    ck["model_args"] = {**ck["model_args"], "block_size": 32}
    ck["model"]["transformer.wpe.weight"] = ck["model"]["transformer.wpe.weight"][:32].clone()
    (tmp_path / "rm").mkdir()
    torch.save(ck, tmp_path / "rm" / "ckpt.pt")
    p = run("ppo.py", f"--sft_path={sft_dir}/ckpt.pt", f"--reward_path={tmp_path}/rm", "--max_new_tokens=40",
            "--max_iters=1", f"--out_dir={tmp_path}/o", "--device=cpu", ok=False, timeout=300)
    one_line(p, r"^error: --max_new_tokens=40: must be < 32, the context \(block_size\) of the reward model")
