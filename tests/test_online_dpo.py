"""dpo.py --online (online DPO, Guo et al. 2024): the pair building and the simulated people by hand, then
the script: smoke + exact resume, DDP, the reward model as the labeler, bad input, and learning (gold up)."""
import os
import random

import pytest

import task
from common import load_model
from conftest import assert_same_weights, read_metrics, run
from dpo import human_votes, online_pairs


def test_online_pairs_by_hand():
    """Rows 2i, 2i+1 answer prompt i; a share of votes above 1/2 chooses the first, below the second;
    identical responses and a split vote are dropped; the prompt length travels with the pair."""
    p = [7, 8]
    seqs = [p + [1], p + [2],      # votes 1.0: the first is chosen
            p + [3], p + [4, 5],   # votes 1/3: the second is chosen
            p + [6], p + [6],      # identical: no preference
            p + [1], p + [9],      # a split vote (2 of 4): no preference
            [5] + [9], [5] + [1]]  # votes 2/3, another prompt of length 1
    rows = online_pairs(seqs, [2, 2, 2, 2, 1], [1.0, 1 / 3, 1.0, 0.5, 2 / 3])
    assert rows == [dict(chosen=p + [1], rejected=p + [2], n_prompt=2),
                    dict(chosen=p + [4, 5], rejected=p + [3], n_prompt=2),
                    dict(chosen=[5, 9], rejected=[5, 1], n_prompt=1)]
    assert online_pairs([p + [1], p + [1]], [2], [1.0]) == []


def test_human_votes_follow_gold():
    """Nearly noiseless people (temperature 1e-3) all vote for the higher gold score; the share of 3 people
    is a multiple of 1/3; at a huge temperature the votes are coin flips (mean ~ 1/2 over 3,000 pairs)."""
    prompt = "Notes on the cafe: tea --, cake ++. Again: yes."
    good, bad = " I loved the cake.<|endoftext|>", " The cake was awful.<|endoftext|>"
    assert task.gold(prompt, good) > task.gold(prompt, bad)
    rng = random.Random(0)
    assert human_votes([prompt, prompt], [good, bad], [bad, good], rng, 3, 1e-3) == [1.0, 0.0]
    shares = human_votes([prompt] * 3000, [good] * 3000, [bad] * 3000, rng, 3, 1e6)
    assert set(shares) <= {0.0, 1 / 3, 2 / 3, 1.0} and abs(sum(shares) / 3000 - 0.5) < 0.03


FAST = ["--eval_repeats=1", "--n_print=1", "--batch_size=8", "--online=True"]


def args(sft_dir, out, *extra):
    # (data_path: online on the built-in task reads no pairs; none beside it, so no held-out pairs either)
    return [f"--out_dir={out}", f"--sft_path={os.path.join(sft_dir, 'ckpt.pt')}", f"--data_path={out}/none_train.jsonl",
            *FAST, *extra]


def test_smoke_and_exact_resume(sft_dir, tmp_path):
    """4 steps in one run and 2 + 2 with a resume in between: the same labels counted, the same log lines
    and the same weights (the prompts, the samples and the simulated people's noise all continue)."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    p = run("dpo.py", *args(sft_dir, one, "--max_iters=4", "--eval_interval=2", "--log_interval=1"))
    assert "online: " in p.stdout and "3 simulated people" in p.stdout
    run("dpo.py", *args(sft_dir, two, "--max_iters=2", "--eval_interval=2", "--log_interval=1"))
    run("dpo.py", *args(sft_dir, two, "--max_iters=4", "--eval_interval=2", "--log_interval=1", "--init_from=resume"))
    m1, m2 = read_metrics(one), read_metrics(two)
    train = [r for r in m1 if "loss" in r]
    assert [r["iter"] for r in train] == [1, 2, 3, 4]
    assert all(0 < r["labels"] - prev <= 8 for r, prev in zip(train, [0] + [r["labels"] for r in train]))
    assert train[0]["rewards/margins"] == 0 and all("gold" in r for r in train)  # step 1: policy = reference
    # the sampler's (KV-cached) log-probs against the trainer's forward, fp32 on the CPU: rounding only
    assert all(0 <= r["mismatch_kl"] < 1e-4 for r in train), [r["mismatch_kl"] for r in train]
    evals = [r for r in m1 if "kl" in r]
    assert [r["iter"] for r in evals] == [0, 2, 4] and evals[0]["labels"] == 0 and evals[-1]["labels"] == train[-1]["labels"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "ms_per_iter")} for r in rows]
    assert strip(m1) == strip(m2)
    assert load_model(two)[2]["labels"] == train[-1]["labels"]
    assert_same_weights(one, two)


def test_ddp(sft_dir, tmp_path):
    """torchrun: 2 processes at 4 prompts each (each rank samples with its own generator, so this is not
    bitwise one process at 8) finish and count every rank's labels."""
    out = str(tmp_path / "ddp")
    run("dpo.py", *args(sft_dir, out, "--max_iters=2", "--eval_interval=2", "--log_interval=1", "--batch_size=4"),
        torchrun=2)
    train = [r for r in read_metrics(out) if "loss" in r]
    assert train[-1]["labels"] > 4 and load_model(out)[2]["iter_num"] == 2


def test_reward_model_labels(reward_dir, sft_dir, tmp_path):
    """--labeler=reward: the reward model picks the higher-scoring sample; its labels are counted."""
    out = str(tmp_path / "rm")
    p = run("dpo.py", *args(sft_dir, out, "--max_iters=2", "--eval_interval=2", "--log_interval=1", "--labeler=reward",
                            f"--reward_path={os.path.join(reward_dir, 'ckpt.pt')}"))
    assert "labelled by " + os.path.join(reward_dir, "ckpt.pt") in p.stdout
    assert [r for r in read_metrics(out) if "loss" in r][-1]["labels"] > 0


@pytest.mark.parametrize("extra, message", [
    (["--loss_type=kto"], "--online labels pairs, and KTO trains on unpaired thumbs"),
    (["--temperature=0"], "--temperature=0 with --online"),
    (["--n_annotators=0"], "--n_annotators=0: must be > 0"),
    (["--labeler=robot"], "labeler"),
    (["--labeler=reward", "--reward_path=nowhere/ckpt.pt"], "nowhere"),
])
def test_bad_input(sft_dir, tmp_path, extra, message):
    p = run("dpo.py", *args(sft_dir, str(tmp_path / "o"), *extra), ok=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], p.stderr


def test_online_dpo_raises_gold(sft_dir, tmp_path):
    """Online DPO from the SFT model with the simulated people labelling its own samples raises the
    held-out gold score (iter 0 is the SFT model) and keeps the grammar."""
    out = str(tmp_path / "learn")
    run("dpo.py", *args(sft_dir, out, "--max_iters=60", "--eval_interval=60", "--log_interval=20", "--batch_size=16",
                        "--eval_repeats=2"))
    evals = [r for r in read_metrics(out) if "kl" in r]
    before, after = evals[0], evals[-1]
    print(f"online DPO: gold {before['gold']:+.3f} -> {after['gold']:+.3f}, parse {after['parse']:.2f}, "
          f"kl {after['kl']:.2f}, {after['labels']} labels")
    assert after["iter"] == 60 and after["gold"] > before["gold"] + 0.1 and after["parse"] > 0.8
