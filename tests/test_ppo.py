"""Tests for ppo.py: worked examples for each piece of PPO, the first-ratio identity, then the script
(smoke, bad input, resume, DDP, the user's prompts, learning on the built-in task)."""
import ast
import json
import math

import pytest
import torch

import common
import data
import kernels
import task
from common import masked_whiten
from conftest import bf16_rollout, read_metrics, run
from ppo import (explained_variance, final_scores, gae, kl_rewards, policy_loss, response_logprobs,
                 update_beta, value_loss)


# ----------------------------------------------------------------------------- worked examples
def test_policy_loss_worked_examples():
    # ratio 0.06 / 0.02 = 3, advantage +4, eps 0.2: min(3 * 4, 1.2 * 4) = 4.8 (clipped: no more push up)
    lp, old = torch.tensor([[math.log(0.06)]]), torch.tensor([[math.log(0.02)]])
    one = torch.ones(1, 1)
    loss, clipfrac, approx_kl = policy_loss(lp, old, torch.tensor([[4.0]]), one, 0.2)
    assert loss.item() == pytest.approx(-4.8, abs=1e-5)
    assert clipfrac.item() == 1.0
    assert approx_kl.item() == pytest.approx(3 - 1 - math.log(3), abs=1e-5)  # k3: (ratio - 1) - log ratio = 0.9014
    # ratio 1.3, advantage -3: min(1.3 * -3, 1.2 * -3) = min(-3.9, -3.6) = -3.9. The pessimistic bound
    # does NOT clip here (the "-3.6" is the clipped term, which min() rejects): a move that made
    # a bad action more likely keeps its full gradient so it can be undone.
    loss, clipfrac, _ = policy_loss(torch.tensor([[math.log(1.3)]]), torch.zeros(1, 1), torch.tensor([[-3.0]]), one, 0.2)
    assert loss.item() == pytest.approx(3.9, abs=1e-5)
    assert clipfrac.item() == 0.0
    # ratio 0.5, advantage -3: min(-1.5, 0.8 * -3 = -2.4) = -2.4, clipped
    loss, clipfrac, _ = policy_loss(torch.tensor([[math.log(0.5)]]), torch.zeros(1, 1), torch.tensor([[-3.0]]), one, 0.2)
    assert loss.item() == pytest.approx(2.4, abs=1e-5) and clipfrac.item() == 1.0
    # token-level mean over valid tokens: the masked token (huge advantage) is ignored
    lp = torch.tensor([[math.log(0.06), math.log(1.3), 5.0]])
    old = torch.tensor([[math.log(0.02), 0.0, 0.0]])
    adv = torch.tensor([[4.0, -3.0, 1e6]])
    loss, clipfrac, _ = policy_loss(lp, old, adv, torch.tensor([[1.0, 1.0, 0.0]]), 0.2)
    assert loss.item() == pytest.approx(-(4.8 - 3.9) / 2, abs=1e-5)
    assert clipfrac.item() == pytest.approx(0.5)


def test_value_loss_worked_example():
    # old value 1.0, new 2.0, return 2.0, eps 0.2: unclipped error 0, clipped value 1.2 -> error 0.64;
    # the max keeps 0.64: 0.5 * 0.64 = 0.32. A second token inside the clip range: 0.5 * (0.1)^2.
    v, old, ret = torch.tensor([[2.0, 1.1]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 1.0]])
    loss = value_loss(v, old, ret, torch.ones(1, 2), 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.01) / 2, abs=1e-6)


def test_kl_rewards_worked_example():
    logp = torch.tensor([[-1.0, -2.0, -0.3], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -1.5, -0.2]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards, kl = kl_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, beta=0.1, kind="k1")
    # k1 = logp - ref_logp: [0.5, -1.0, (masked)], [0, 1.0, -0.3]; score added at each last valid token
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [0.0, 1.0, -0.3]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.1 + 2.0, 0.0], [0.0, -0.1, 0.03 - 1.0]]))
    _, kl3 = kl_rewards(torch.zeros(2), logp, ref, mask, beta=0.1, kind="k3")
    assert kl3[0, 0].item() == pytest.approx(math.exp(-0.5) - 1 + 0.5, abs=1e-6)  # r - 1 - log r, r = e^-0.5


def test_gae_against_direct_discounted_sums():
    torch.manual_seed(0)
    B, N, gamma, lam = 5, 7, 0.9, 0.8
    rewards, values = torch.randn(B, N), torch.randn(B, N)
    lengths = [7, 3, 1, 5, 6]
    mask = torch.tensor([[float(t < n) for t in range(N)] for n in lengths])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b, n in enumerate(lengths):
        v = values[b, :n].tolist() + [0.0]  # V = 0 after the last token
        deltas = [rewards[b, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(N):
            want = sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t)) if t < n else 0.0
            assert adv[b, t].item() == pytest.approx(want, abs=1e-5)
            assert ret[b, t].item() == pytest.approx(want + v[t] if t < n else 0.0, abs=1e-5)
    # lam = 1: the returns are the discounted reward-to-go, whatever the values
    _, ret1 = gae(rewards, values, mask, gamma, 1.0)
    for b, n in enumerate(lengths):
        for t in range(n):
            want = sum(gamma ** l * rewards[b, t + l].item() for l in range(n - t))
            assert ret1[b, t].item() == pytest.approx(want, abs=1e-5)


def test_masked_whiten_and_beta_controller():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    w = masked_whiten(x, mask)
    valid = w[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert (valid ** 2).mean().item() == pytest.approx(1.0, abs=1e-4)  # population variance 1
    assert (w[~mask.bool()] == 0).all()
    assert masked_whiten(x, mask, shift_mean=False)[mask.bool()].mean().item() == pytest.approx(3.0, abs=1e-5)
    # KL 12 vs target 6: error +1 clipped to +0.2; 256 samples of a 10000 horizon
    assert update_beta(0.1, 12.0, 6.0, 256, 10000) == pytest.approx(0.1 * (1 + 0.2 * 0.0256))
    assert update_beta(0.1, 5.4, 6.0, 256, 10000) == pytest.approx(0.1 * (1 - 0.1 * 0.0256))  # inside the clip


def test_explained_variance_worked_example():
    # returns (2, 2, 4): Var 8/9 (mean 8/3); errors R - V = (1, 0, 1): Var 2/9; 1 - (2/9) / (8/9) = 0.75.
    # The masked 4th token (value 100) is ignored.
    v, ret = torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[2.0, 2.0, 4.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert explained_variance(v, ret, mask) == pytest.approx(0.75, abs=1e-6)
    # a critic off by a constant explains all the variance (it is a variance, not a squared error)
    assert explained_variance(ret - 5.0, ret, mask) == pytest.approx(1.0, abs=1e-6)
    # predicting the mean return explains none
    assert explained_variance(torch.full_like(ret, 8 / 3), ret, mask) == pytest.approx(0.0, abs=1e-6)


def test_unended_penalty_and_score_clip():
    """A response with no <|endoftext|> gets unended_score (-1) whatever the RM said; one that ended keeps
    the RM's score; the clip applies after."""
    eot = 9
    resp = torch.tensor([[3, 4, eot, eot], [3, 4, 5, 6], [eot, eot, eot, eot], [5, 6, 7, eot]])
    score = torch.tensor([2.5, 3.0, -0.5, 0.7])
    out, ended = final_scores(score, resp, eot, unended_score=-1.0)
    assert ended.tolist() == [True, False, True, True]
    assert out.tolist() == pytest.approx([2.5, -1.0, -0.5, 0.7])
    out, _ = final_scores(score, resp, eot, unended_score=None)  # --unended_penalty=False
    assert out.tolist() == pytest.approx([2.5, 3.0, -0.5, 0.7])
    out, _ = final_scores(score, resp, eot, unended_score=-1.0, score_clip=2.0)
    assert out.tolist() == pytest.approx([2.0, -1.0, -0.5, 0.7])


def test_sampler_logprobs_match_a_full_forward(sft_dir):
    """At fp32 the sampler's log-probs (KV cache) equal a full forward's through response_logprobs."""
    torch.manual_seed(0)
    policy, vocab, _ = common.load_model(sft_dir)
    policy.eval()
    tok = data.Tokenizer(vocab)
    ids = data.encode_prompts(tok, task.prompts("train")[:16], 24)
    out = policy.generate(ids, 40, tok.eot, temperature=0.7)
    labels = out["tokens"][:, out["prompt_len"]:].masked_fill(~out["response_mask"], -100)
    with torch.no_grad():
        full, _ = response_logprobs(policy, out["tokens"], out["attention_mask"], labels, 0.7)
    assert torch.allclose(out["logprobs"], full, atol=1e-4)


@pytest.mark.parametrize("fused", [False, True])
def test_first_ratio_is_one_and_first_kl_zero_under_bf16(sft_dir, tmp_path, fused):
    """ppo.response_logprobs under bf16 autocast, fused head or not: the rollout's log-probs (full batch,
    eval mode), the reference's (another copy of the SFT model) and the update's (a minibatch, train mode,
    from a checkpoint that asked for dropout) agree exactly: the first ratio is 1 (clipfrac 0, approx_kl 0)
    and the first KL penalty 0."""
    r = bf16_rollout(sft_dir, tmp_path)
    policy, ref, tokens, attn, mask, P, labels, bf16 = r.policy, r.ref, r.tokens, r.attn, r.mask, r.P, r.labels, r.bf16
    with torch.no_grad(), bf16:
        old, _ = response_logprobs(policy, tokens, attn, labels, 0.7, fused)
        ref_logp, _ = response_logprobs(ref, tokens, attn, labels, 0.7, fused)
        logits_path = kernels.logprobs(ref(tokens, attn)[:, P - 1:-1], labels, temperature=0.7)  # the old ref path
    policy.train()
    with bf16:
        new, _ = response_logprobs(policy, tokens[4:12], attn[4:12], labels[4:12], 0.7, fused)
    fm = mask[4:12].float()
    _, clipfrac, approx_kl = policy_loss(new, old[4:12], torch.randn(8, new.shape[1]), fm, 0.2)
    assert clipfrac.item() == 0.0 and approx_kl.item() <= 1e-12
    _, kl = kl_rewards(torch.zeros(16), old, ref_logp, mask.float(), beta=0.1)
    assert kl.abs().max().item() <= 1e-6
    if fused:  # the reference by bf16 logits against the fused policy: the phantom KL this test guards against
        _, kl_before = kl_rewards(torch.zeros(16), old, logits_path, mask.float(), beta=0.1)
        assert kl_before.abs().sum(1).mean().item() > 1e-2


# ----------------------------------------------------------------------------- the script
SMALL = ["--batch_size=16", "--n_minibatches=2", "--ppo_epochs=1", "--eval_repeats=1", "--n_print=1"]


def _args(sft_dir, reward_dir, out, *extra):
    return [f"--sft_path={sft_dir}", f"--reward_path={reward_dir}", f"--out_dir={out}", *SMALL, *extra]


def test_smoke_metrics_and_checkpoint(sft_dir, reward_dir, tmp_path):
    out = str(tmp_path / "ppo")
    # one epoch of one minibatch: the only update step sees ratio exactly 1, under bf16 and the fused head
    # too (rollout, reference and update log-probs by one call), and at iter 1 the policy is the reference
    run("ppo.py", *_args(sft_dir, reward_dir, out, "--max_iters=2", "--eval_interval=2", "--n_minibatches=1",
                         "--dtype=bfloat16", "--fused_lm_head=True"))
    ms = read_metrics(out)
    train = [m for m in ms if m["split"] == "train"]
    test = [m for m in ms if m["split"] == "test"]
    assert [m["iter"] for m in train] == [1, 2] and [m["iter"] for m in test] == [0, 2]
    for k in ("reward", "gold", "kl", "beta", "entropy", "policy_loss", "value_loss", "clipfrac", "approx_kl",
              "explained_variance", "response_len", "ended", "tokens_per_s", "mismatch_kl"):
        assert k in train[0], k
    assert all(0 <= m["mismatch_kl"] < 1e-2 for m in train)  # the sampler vs the update's forward: bf16 rounding only
    for k in ("reward", "gold", "kl", "parse", "ended", "response_len"):
        assert k in test[0], k
    assert all(m["approx_kl"] == 0 and m["clipfrac"] == 0 for m in train)
    assert train[0]["kl"] == 0  # rollout KL to the reference before any update: exactly 0
    assert test[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # iter 0: the policy is the reference
    ck = common.load_checkpoint(out)
    assert ck["iter_num"] == 2 and "critic" in ck and "beta" in ck
    policy, vocab, _ = common.load_model(out)  # a plain LM, loadable by sample.py / the next stage
    assert not policy.config.scalar_head and vocab == common.load_checkpoint(sft_dir)["vocab"]


def test_bad_input(sft_dir, reward_dir, tmp_path):
    p = run("ppo.py", *_args(sft_dir, str(tmp_path / "nope"), str(tmp_path / "a"), "--max_iters=1"), ok=False)
    assert p.returncode != 0 and "no checkpoint here" in p.stderr
    p = run("ppo.py", *_args(sft_dir, reward_dir, str(tmp_path / "b"), "--kl_estimator=k9"), ok=False)
    assert p.returncode != 0 and "k1" in p.stderr
    p = run("ppo.py", *_args(sft_dir, reward_dir, str(tmp_path / "c"), "--init_from=resume"), ok=False)
    assert p.returncode == 2 and "--init_from=resume: no checkpoint in" in p.stderr
    p = run("ppo.py", *_args(sft_dir, reward_dir, str(tmp_path / "d"), "--temperature=0"), ok=False)
    assert p.returncode != 0 and "--temperature=0.0: must be > 0" in p.stderr and "lower --lr" not in p.stderr


def test_resume(sft_dir, reward_dir, tmp_path):
    out = str(tmp_path / "ppo")
    run("ppo.py", *_args(sft_dir, reward_dir, out, "--max_iters=2", "--eval_interval=2"))
    beta = common.load_checkpoint(out)["beta"]
    run("ppo.py", *_args(sft_dir, reward_dir, out, "--max_iters=3", "--eval_interval=2", "--init_from=resume"))
    train = [m for m in read_metrics(out) if m["split"] == "train"]
    assert [m["iter"] for m in train] == [1, 2, 3]
    assert train[2]["beta"] == pytest.approx(beta, rel=1e-4)  # the controller's state came back
    assert common.load_checkpoint(out)["iter_num"] == 3


def test_ddp_two_processes_fused_lm_head(sft_dir, reward_dir, tmp_path):
    out = str(tmp_path / "ppo")
    run("ppo.py", *_args(sft_dir, reward_dir, out, "--max_iters=2", "--eval_interval=2", "--fused_lm_head=True"),
        torchrun=2)
    train = [m for m in read_metrics(out) if m["split"] == "train"]
    assert [m["iter"] for m in train] == [1, 2]  # rank 0 logs once per iteration
    assert common.load_checkpoint(out)["iter_num"] == 2


def test_learning_gold_rises_and_beta_follows_the_kl(sft_dir, reward_dir, tmp_path):
    """Gold rises, and the adaptive controller is wired right: after every iteration whose KL was above the
    target beta went up, below it went down (Ziegler et al.). --kl_horizon=640 (the frontier's, gain 0.1)
    so that beta moves visibly at the log's 5 decimals; at the default 10,000 it moves ~1% in 40 iterations.
    On the fixture (a reward model at acc_gold about 0.7) gold rose 0.40 -> 0.53 at target KL 2 (3: 0.59; 4:
    0.48), dipping at iteration 20 in all three (2026-12-07): PPO on a weak reward model gains little, and
    unsteadily."""
    out = str(tmp_path / "ppo")
    target = 2.0
    run("ppo.py", f"--sft_path={sft_dir}", f"--reward_path={reward_dir}", f"--out_dir={out}", "--max_iters=40",
        "--eval_interval=40", "--n_print=0", f"--target_kl={target}", "--kl_horizon=640", "--beta=0.05")
    test = [m for m in read_metrics(out) if m["split"] == "test"]
    sft_gold, final = test[0], test[-1]
    assert final["iter"] == 40
    assert final["gold"] > sft_gold["gold"] + 0.06, (sft_gold, final)
    train = [m for m in read_metrics(out) if m["split"] == "train"]
    steps = [(a["kl"], b["beta"] - a["beta"]) for a, b in zip(train, train[1:]) if abs(a["kl"] - target) > 0.2]
    assert len(steps) > 20 and all((kl > target) == (d > 0) for kl, d in steps), [(m["kl"], m["beta"]) for m in train]


def test_user_prompts(sft_dir, reward_dir, tmp_path):
    """--data_path=prompts.jsonl (data.load_prompts): the user's prompts are rolled out and scored by the
    reward model; every report has the reward and the KL, none the built-in task's gold (it knows nothing of
    these prompts), and the samples shown are of the user's prompts."""
    prompts = [f"I {v} the {n}." for v in ("loved", "hated") for n in ("cake", "tea", "music", "staff")]
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in prompts))
    out = str(tmp_path / "ppo")
    p = run("ppo.py", *_args(sft_dir, reward_dir, out, f"--data_path={mine}", "--max_iters=2", "--eval_interval=2"))
    ms = read_metrics(out)
    assert [(m["iter"], m["split"]) for m in ms] == [(0, "train_prompts"), (1, "train"), (2, "train"),
                                                     (2, "train_prompts")]
    assert all("reward" in m and "kl" in m and "gold" not in m and "parse" not in m for m in ms), ms
    # the reward-hacking monitors need no gold: on the user's prompts too (monitors.py)
    assert all({"monitor/ood_frac", "monitor/kl_rate", "monitor/entropy_ratio"} <= set(m) for m in ms if m["split"] == "train")
    shown = [ast.literal_eval(line.split(" -> ")[0].strip()) for line in p.stdout.splitlines() if " -> " in line]
    assert len(shown) == 2 and set(shown) <= set(prompts), p.stdout
    assert common.load_checkpoint(out)["iter_num"] == 2
