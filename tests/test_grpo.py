"""grpo.py: hand-computed advantages, clipping and loss aggregation; reward functions (built in and from
a user's file); a smoke run with DDP and resume; learning with the gold reward and with the reward model."""
import math
import os

import pytest
import torch
from conftest import last_eval, read_metrics, run

import grpo
from model import load_model

EOT = "<|endoftext|>"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """The test models are tiny: intra-op threads only fight the other processes for the 2 CI cores
    (we measured generation 20x slower with 2 threads on a loaded 2-core machine)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
SMALL = ["--prompts_per_batch=4", "--group_size=4", "--minibatch_size=8", "--max_new_tokens=24",
         "--eval_repeats=1", "--log_interval=1", "--n_print=1"]


# ----------------------------------------------------------------------------- advantages
def test_group_advantages_hand_example():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0]])  # mean 3, centred (-2, -1, 0, 3), sample std sqrt(14/3)
    std = math.sqrt(14 / 3)
    assert torch.allclose(grpo.group_advantages(r, "grpo"), torch.tensor([[-2, -1, 0, 3]]) / std, atol=1e-5)
    assert torch.allclose(grpo.group_advantages(r, "drgrpo"), torch.tensor([[-2.0, -1.0, 0.0, 3.0]]))
    # leave-one-out: 1 - (2+3+6)/3, 2 - (1+3+6)/3, 3 - (1+2+6)/3, 6 - (1+2+3)/3
    assert torch.allclose(grpo.group_advantages(r, "rloo"), torch.tensor([[-8 / 3, -4 / 3, 0.0, 4.0]]))


def test_batch_scaled_advantages_hand_example():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]])
    # group-centred: (-2, -1, 0, 3) and (-1, -1, -1, 3); sum of squares 26 over 8 -> batch std sqrt(26/7)
    centred = torch.tensor([[-2.0, -1, 0, 3], [-1, -1, -1, 3]])
    assert torch.allclose(grpo.group_advantages(r, "batch"), centred / math.sqrt(26 / 7), atol=1e-5)


@pytest.mark.parametrize("mode", ["grpo", "drgrpo", "rloo", "batch"])
def test_all_equal_group_gives_zero_advantage_not_nan(mode):
    r = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    a = grpo.group_advantages(r, mode)
    assert torch.isfinite(a).all() and (a == 0).all()


def test_group_advantages_bad_input():
    with pytest.raises(ValueError, match="group_size >= 2"):
        grpo.group_advantages(torch.tensor([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="unknown advantage"):
        grpo.group_advantages(torch.ones(2, 2), "ppo")


# ----------------------------------------------------------------------------- clipping and aggregation
def test_clip_low_high_hand_example():
    ratio = torch.tensor([[1.5, 0.5, 1.5, 1.25, 0.5]])
    adv = torch.tensor([[2.0, -1.0, -1.0, 1.0, 2.0]])
    logp = ratio.log().requires_grad_()
    loss, low, high = grpo.clipped_policy_loss(logp, torch.zeros_like(ratio), adv, clip_low=0.2, clip_high=0.28)
    # 1.5*2 clipped to 1.28*2; 0.5*-1 clipped to 0.8*-1 (min(-0.5, -0.8)); 1.5*-1 stays (min(-1.5, -1.28));
    # 1.25 inside [0.8, 1.28]; 0.5*2 stays (min(1.0, 1.6))
    assert torch.allclose(loss, torch.tensor([[-2.56, 0.8, 1.5, -1.25, -1.0]]))
    assert low.tolist() == [[False, True, False, False, False]]
    assert high.tolist() == [[True, False, False, False, False]]
    loss.sum().backward()  # a clipped token gets no gradient; d(-ratio*A)/dlogp = -ratio*A otherwise
    assert torch.allclose(logp.grad, torch.tensor([[0.0, 0.0, 1.5, -1.25, -1.0]]))


def test_clip_with_per_sequence_advantage_broadcasts():
    loss, _, _ = grpo.clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -2.0]))
    assert torch.allclose(loss, torch.tensor([[-1.0] * 3, [2.0] * 3]))


def test_aggregate_hand_example():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    m = torch.tensor([[True, True, True], [True, False, False]])
    assert grpo.aggregate(x, m, "seq").item() == pytest.approx((6 / 3 + 4 / 1) / 2)  # 3.0
    assert grpo.aggregate(x, m, "token").item() == pytest.approx(10 / 4)
    assert grpo.aggregate(x, m, "fixed", max_len=4).item() == pytest.approx(10 / (2 * 4))
    with pytest.raises(ValueError, match="loss_agg"):
        grpo.aggregate(x, m, "sum")


# ----------------------------------------------------------------------------- reward functions
def test_builtin_rewards():
    prompts = ["I went to the cafe."] * 3
    responses = [" I would go again." + EOT, " The coffee was bad. The tea was great." + EOT, " The coffee was"]
    assert grpo.gold_reward(prompts, responses) == pytest.approx([1.0, 0.25, -1.5])
    assert grpo.format_reward(prompts, responses) == [1.0, 1.0, 0.0]
    assert grpo.length_reward(prompts, responses) == pytest.approx([0.4, 0.8, 0.3])


def test_user_reward_from_file(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def coffee(prompts, responses):\n    return [r.count('coffee') for r in responses]\n")
    fns = grpo.load_rewards(f"{f}:coffee:0.5, gold:2,format")
    assert [(n, w) for n, _, w in fns] == [("my_reward.coffee", 0.5), ("gold", 2.0), ("format", 1.0)]
    prompts = ["I went to the cafe."] * 2
    responses = [" The coffee was great. I loved the coffee." + EOT, " The tea was"]
    total, each = grpo.score(fns, prompts, responses)
    assert each["my_reward.coffee"].tolist() == [2.0, 0.0]
    # 0.5 * coffee count + 2 * gold + format: 0.5*2 + 2*1 + 1 and 0 + 2*(-1.5) + 0
    assert total.tolist() == pytest.approx([4.0, -3.0])


def test_bad_reward_specs(tmp_path):
    f = tmp_path / "r.py"
    f.write_text("def short(prompts, responses):\n    return [1.0]\n")
    with pytest.raises(ValueError, match="unknown reward"):
        grpo.load_rewards("gold,blue")
    with pytest.raises(FileNotFoundError, match="no file"):
        grpo.load_rewards(str(tmp_path / "missing.py") + ":fn")
    with pytest.raises(ValueError, match="no function 'nope'"):
        grpo.load_rewards(f"{f}:nope")
    with pytest.raises(ValueError, match="not a number"):
        grpo.load_rewards("gold:1e")
    with pytest.raises(ValueError, match="empty"):
        grpo.load_rewards(" , ")
    with pytest.raises(ValueError, match="one finite float per response"):
        grpo.score(grpo.load_rewards(f"{f}:short"), ["a", "b"], ["x", "y"])


def test_reward_model_gets_the_sampled_token_ids():
    """Only 'rm' is given the sampled ids (decode -> encode is not the identity); others see text only."""
    seen = {}
    def rm(prompts, responses, token_ids=None):
        seen["rm"] = token_ids
        return [0.0] * len(responses)
    def mine(prompts, responses):
        return [1.0] * len(responses)
    total, _ = grpo.score([("rm", rm, 1.0), ("mine", mine, 2.0)], ["p"], ["r"], token_ids=[[1, 2, 3]])
    assert seen["rm"] == [[1, 2, 3]] and total.tolist() == [2.0]


# ----------------------------------------------------------------------------- the script
def test_smoke_ddp_resume(sft_dir, tmp_path):
    out = str(tmp_path / "grpo")
    base = [f"--sft_path={sft_dir}/ckpt.pt", f"--out_dir={out}",
            "--rewards=gold:1.0,length:0.1,format:0.5", "--advantage=drgrpo", "--loss_agg=token",
            "--clip_high=0.28", "--ent_coef=0.01", "--fused_lm_head=True", "--kl_estimator=full", *SMALL]
    run("grpo.py", *base, "--max_iters=2", "--eval_interval=2", torchrun=2)
    rows = read_metrics(out)
    train = [r for r in rows if "policy_loss" in r]
    assert [r["iter"] for r in train] == [1, 2]
    for key in ("reward", "reward_std", "reward/gold", "reward/length", "reward/format", "zero_std_frac", "kl",
                "entropy", "clipfrac_low", "clipfrac_high", "clipfrac", "approx_kl", "response_len", "ended"):
        assert key in train[-1], key
    assert all(r["kl"] >= 0 for r in train)  # the exact KL (--kl_estimator=full) is never negative
    assert {"gold", "parse", "ended", "response_len", "kl"} <= set(last_eval(out))
    model, vocab, ckpt = load_model(out)
    assert ckpt["iter_num"] == 2 and not model.config.scalar_head and vocab is not None
    # resume: continues from iter 2 with the saved optimizer, single process, no reference (kl_coef=0)
    run("grpo.py", *base, "--init_from=resume", "--max_iters=3", "--eval_interval=3", "--kl_coef=0")
    assert load_model(out)[2]["iter_num"] == 3
    assert [r["iter"] for r in read_metrics(out) if "policy_loss" in r][-1] == 3
    assert "kl" not in last_eval(out)  # no reference model was loaded


def test_bad_input(sft_dir, tmp_path):
    p = run("grpo.py", f"--sft_path={tmp_path}/nothing.pt", ok=False)
    assert p.returncode != 0 and "python sft.py" in p.stderr
    p = run("grpo.py", f"--sft_path={sft_dir}/ckpt.pt", "--rewards=gold,nonsense", ok=False)
    assert p.returncode != 0 and "unknown reward" in p.stderr
    p = run("grpo.py", f"--sft_path={sft_dir}/ckpt.pt", "--kl_estimator=k2", ok=False)
    assert p.returncode != 0 and "'k3_corrected' or 'full'" in p.stderr
    p = run("grpo.py", f"--sft_path={sft_dir}/ckpt.pt", "--minibatch_size=7", ok=False)
    assert p.returncode != 0 and "must divide" in p.stderr
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "I went to the cafe."}\n{"text": 1}\n')
    p = run("grpo.py", f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={bad}", ok=False)
    assert p.returncode != 0 and "prompts.jsonl:2" in p.stderr


def _learn(sft_dir, out, *args):
    run("grpo.py", f"--sft_path={sft_dir}/ckpt.pt", f"--out_dir={out}",
        "--prompts_per_batch=8", "--group_size=8", "--max_iters=12", "--eval_interval=12", "--log_interval=4",
        "--lr=5e-4", "--max_new_tokens=24", "--eval_repeats=4", *args)
    evals = [r for r in read_metrics(out) if "parse" in r]
    return evals[0], evals[-1]


def test_learns_with_gold_reward(sft_dir, tmp_path):
    before, after = _learn(sft_dir, str(tmp_path / "gold"), "--rewards=gold")
    assert before["iter"] == 0 and after["iter"] == 12
    assert after["gold"] > before["gold"] + 0.2, (before, after)


def test_learns_with_reward_model(sft_dir, reward_dir, tmp_path):
    before, after = _learn(sft_dir, str(tmp_path / "rm"), "--rewards=rm", f"--reward_path={reward_dir}/ckpt.pt")
    rows = [r for r in read_metrics(str(tmp_path / "rm")) if "reward/rm" in r]
    assert rows[-1]["reward/rm"] > rows[0]["reward/rm"]  # the reward the policy was trained on went up
    assert after["gold"] > before["gold"] + 0.1, (before, after)  # and the hidden human agrees
