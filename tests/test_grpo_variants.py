"""grpo_variants.py: hand-computed GSPO, CISPO, REINFORCE++ and KL-variant values on a toy batch (a group
of 4 responses of 3 tokens), clip boundaries, DAPO's dynamic sampling on a toy reward and its overlong
penalty at the boundary lengths; a short grpo.py run with every new flag."""
import math

import pytest
import torch

import grpo
import grpo_variants as gv
from conftest import read_metrics, run

# the toy batch: 4 responses (one group) x 3 tokens; the last response has 2 tokens (its third is padding)
MASK = torch.tensor([[True, True, True]] * 3 + [[True, True, False]])


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# ----------------------------------------------------------------------------- GSPO
def test_gspo_sequence_ratio_and_clip_hand_example():
    old = torch.full((4, 3), -1.0)
    log_ratio = torch.tensor([[0.1, 0.2, 0.0],     # mean 0.1: s = e^0.1 = 1.1052, inside [0.8, 1.2]
                              [0.3, 0.3, 0.3],     # s = e^0.3 = 1.3499 > 1.2 with A > 0: clipped to 1.2
                              [-0.3, -0.3, -0.3],  # s = e^-0.3 = 0.7408 < 0.8 with A < 0: clipped to 0.8
                              [0.6, -0.6, 5.0]])   # mean over the 2 real tokens 0: s = 1 (padding ignored)
    logp = (old + log_ratio).requires_grad_()
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, low, high = gv.gspo_policy_loss(logp, old, adv, MASK, clip_low=0.2, clip_high=0.2)
    s0 = math.exp(0.1)
    expect = torch.tensor([[-s0] * 3, [-1.2] * 3, [0.8] * 3, [1.0] * 3])
    assert torch.allclose(loss, expect, atol=1e-6)  # one loss per response, on each of its tokens
    assert low.tolist() == [[False] * 3, [False] * 3, [True] * 3, [False] * 3]
    assert high.tolist() == [[False] * 3, [True] * 3, [False] * 3, [False] * 3]
    # --loss_agg=seq gives GSPO's mean over responses
    assert grpo.aggregate(loss, MASK, "seq").item() == pytest.approx((-s0 - 1.2 + 0.8 + 1.0) / 4, abs=1e-6)
    grpo.aggregate(loss, MASK, "seq").backward()
    # d/dlogp_t of -s A (per response, / 4 responses): -A s / |y| / 4 on each real token; 0 where clipped
    g = torch.tensor([[-s0 / 3 / 4] * 3, [0.0] * 3, [0.0] * 3, [1 / 2 / 4, 1 / 2 / 4, 0.0]])
    assert torch.allclose(logp.grad, g, atol=1e-6)


def test_gspo_clip_boundary():
    """Just inside the band the ratio counts and has a gradient; just outside it is clipped."""
    old, adv, mask = torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.ones(2, 3, dtype=torch.bool)
    inside = torch.tensor([[math.log(1.199)] * 3, [math.log(0.801)] * 3])
    outside = torch.tensor([[math.log(1.201)] * 3, [math.log(0.799)] * 3])
    _, lo, hi = gv.gspo_policy_loss(inside, old, adv, mask, 0.2, 0.2)
    assert not lo.any() and not hi.any()
    loss, lo, hi = gv.gspo_policy_loss(outside, old, adv, mask, 0.2, 0.2)
    assert hi[0].all() and lo[1].all() and not hi[1].any() and not lo[0].any()
    assert torch.allclose(loss, torch.tensor([[-1.2] * 3, [0.8] * 3]))
    # on the pessimistic side the unclipped term wins: s = 1.5 with A < 0, s = 0.5 with A > 0 keep their
    # value and gradient (-A s / 3 per token) and count as not clipped
    logp = torch.tensor([[math.log(1.5)] * 3, [math.log(0.5)] * 3], requires_grad=True)
    loss, lo, hi = gv.gspo_policy_loss(logp, old, torch.tensor([-1.0, 1.0]), mask, 0.2, 0.2)
    assert torch.allclose(loss, torch.tensor([[1.5] * 3, [-0.5] * 3])) and not lo.any() and not hi.any()
    loss[:, 0].sum().backward()  # one token's copy of each response's loss
    assert torch.allclose(logp.grad, torch.tensor([[0.5] * 3, [-0.5 / 3] * 3]))


# ----------------------------------------------------------------------------- CISPO
def test_cispo_keeps_every_tokens_gradient_hand_example():
    old = torch.full((4, 3), -1.0)
    ratio = torch.tensor([[1.5, 1.1, 1.0], [0.5, 0.9, 1.0], [1.5, 0.5, 1.28], [0.85, 2.0, 1.0]])
    logp = (old + ratio.log()).requires_grad_()
    adv = torch.tensor([1.0, -1.0, -1.0, 2.0])
    loss, low, high = gv.cispo_policy_loss(logp, old, adv, clip_low=0.2, clip_high=0.28)
    # weight clip(r, 0.8, 1.28), no gradient through it: loss = -w A logp, grad = -w A
    w = torch.tensor([[1.28, 1.1, 1.0], [0.8, 0.9, 1.0], [1.28, 0.8, 1.28], [0.85, 1.28, 1.0]])
    A = adv[:, None]
    assert torch.allclose(loss, -w * A * logp.detach(), atol=1e-6)
    loss.sum().backward()
    assert torch.allclose(logp.grad, -w * A, atol=1e-6)
    # the capped tokens: strictly outside [0.8, 1.28] (1.28 itself is not capped)
    assert high.tolist() == [[True, False, False], [False] * 3, [True, False, False], [False, True, False]]
    assert low.tolist() == [[False] * 3, [True, False, False], [False, True, False], [False] * 3]
    # where PPO's clip would cut the gradient (ratio 1.5, A > 0), CISPO keeps it, capped; inside the band
    # the two gradients agree
    logp2 = logp.detach().clone().requires_grad_()
    ppo, _, _ = grpo.clipped_policy_loss(logp2, old, adv, 0.2, 0.28)
    ppo.sum().backward()
    assert logp2.grad[0, 0] == 0 and logp.grad[0, 0] == pytest.approx(-1.28)
    assert torch.allclose(logp2.grad[0, 1:], logp.grad[0, 1:]) and torch.allclose(logp2.grad[1, 1:], logp.grad[1, 1:])


# ----------------------------------------------------------------------------- REINFORCE++
def test_reinforce_pp_hand_example():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])  # two groups of 4, 3 tokens each
    mask = torch.ones(8, 3, dtype=torch.bool)  # (equal lengths: the token statistics equal the response ones)
    # 'reinforce': batch mean 32/8 = 4; deviations (-3,-2,-1,2, 1,1,1,1), population var 22/8
    a = gv.reinforce_pp_advantages(rewards, mask, baseline=False)
    dev = torch.tensor([-3.0, -2, -1, 2, 1, 1, 1, 1])
    assert torch.allclose(a, (dev / math.sqrt(22 / 8))[:, None].expand(8, 3), atol=1e-5)
    # 'reinforce_baseline': group-centred (-2,-1,0,3, 0,0,0,0), mean 0, population var 14/8;
    # the all-equal group gets exactly 0 (with no baseline it got +1/sqrt(2.75): the batch is its baseline)
    a = gv.reinforce_pp_advantages(rewards, mask, baseline=True)
    c = torch.tensor([-2.0, -1, 0, 3, 0, 0, 0, 0])
    assert torch.allclose(a, (c / math.sqrt(14 / 8))[:, None].expand(8, 3), atol=1e-5)


def test_reinforce_pp_baseline_whitens_over_tokens_unequal_lengths():
    """Responses of 3, 1, 2, 2 tokens (group 1: rewards 0, 4, 0, 0 -> centred -1, 3, -1, -1) and an all-equal
    group 2 of 1 token each (centred 0). The token-weighted mean of the centred rewards is (-3 + 3 - 2 - 2) / 12
    = -1/3, so the all-equal group's tokens get +1/3 / std (whitening moves them off 0: only equal lengths
    made them 0), and a response-weighted mean (-1 + 3 - 1 - 1) / 8 = 0 would leave them at 0."""
    rewards = torch.tensor([[0.0, 4.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 0]] + [[1, 0, 0]] * 4, dtype=torch.bool)
    a = gv.reinforce_pp_advantages(rewards, mask, baseline=True)
    vals = [-1.0] * 3 + [3.0] + [-1.0] * 4 + [0.0] * 4  # the 12 real tokens' centred rewards
    mean = sum(vals) / 12
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / 12)
    assert mean == pytest.approx(-1 / 3)
    expect = torch.tensor([[-1.0] * 3, [3.0, 0, 0], [-1.0] * 3, [-1.0] * 3] + [[0.0] * 3] * 4)
    assert torch.allclose(a, torch.where(mask, (expect - mean) / std, torch.zeros(())), atol=1e-5)
    assert a[4:, 0].tolist() == pytest.approx([(1 / 3) / std] * 4, abs=1e-5)


def test_kl_in_reward_before_the_group_baseline_worked_example():
    """Rewards 0.50, 0.52, 0.54, 0.56 with KL sums 1, 2, 3, 4 nats (the last response's padding holds a huge
    log-ratio, masked), coef 0.02: every penalised reward is 0.48, so the advantages are 0 (verl's order). The
    old order (group-normalise, then add the KL) gave -1.18, -0.43, +0.33, +1.08. At coef 0.01: 0.49 .. 0.52,
    steps of 0.01: (-1.5, -0.5, 0.5, 1.5) / sqrt(5/3)."""
    rewards = torch.tensor([[0.50, 0.52, 0.54, 0.56]])
    old = torch.zeros(4, 3)
    ref = torch.tensor([[-0.5, -0.5, 0.0], [-1.0, -1.0, 0.0], [-1.0, -1.0, -1.0], [-2.0, -2.0, -99.0]])
    pen = gv.kl_penalised_rewards(rewards, old, ref, MASK, 0.02)
    assert pen.tolist()[0] == pytest.approx([0.48] * 4, abs=1e-7)
    assert grpo.group_advantages(pen).abs().max().item() < 1e-6
    adv = grpo.group_advantages(gv.kl_penalised_rewards(rewards, old, ref, MASK, 0.01))
    assert adv[0].tolist() == pytest.approx([x / math.sqrt(5 / 3) for x in (-1.5, -0.5, 0.5, 1.5)], abs=1e-4)


def test_reinforce_pp_token_weighted_with_kl_return():
    """One group of 4 with the toy mask (11 real tokens): statistics are token-weighted and include the
    KL reward-to-go, as OpenRLHF whitens its per-token returns."""
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    kl = torch.zeros(4, 3)
    kl[0] = torch.tensor([-0.3, -0.2, -0.1])
    a = gv.reinforce_pp_advantages(rewards, MASK, baseline=True, kl_return=kl)
    # per-token values: row0 (-2.3, -2.2, -2.1), row1 -1 x3, row2 0 x3, row3 3 x2 (its padding excluded)
    vals = [-2.3, -2.2, -2.1, -1, -1, -1, 0, 0, 0, 3, 3]
    mean = sum(vals) / 11
    std = math.sqrt(sum(v * v for v in vals) / 11 - mean ** 2)
    expect = torch.tensor([[-2.3, -2.2, -2.1], [-1.0] * 3, [0.0] * 3, [3.0, 3.0, 0.0]])
    expect = torch.where(MASK, (expect - mean) / std, torch.zeros(()))
    assert torch.allclose(a, expect, atol=1e-5)


def test_kl_reward_to_go_hand_example():
    old = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-2.0, -1.0, -0.5], [-1.5, -3.0, -9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    # k1 = old - ref: (1, 0, -0.5) and (0.5, 2, [masked]); to the end: (0.5, -0.5, -0.5) and (2.5, 2, 0)
    out = gv.kl_reward_to_go(old, ref, mask, coef=0.1)
    assert torch.allclose(out, -0.1 * torch.tensor([[0.5, -0.5, -0.5], [2.5, 2.0, 0.0]]))


# ----------------------------------------------------------------------------- KL variants
def test_k3_plus_has_k3_value_and_k2_gradient():
    g = torch.Generator().manual_seed(0)
    logp0, ref = -3 * torch.rand(4, 3, generator=g), -3 * torch.rand(4, 3, generator=g)
    logp = logp0.clone().requires_grad_()
    value = gv.kl_k3_plus(logp, ref)
    k3 = (ref - logp0).exp() - 1 - (ref - logp0)
    assert torch.allclose(value, k3, atol=1e-6)
    value.sum().backward()
    k2_logp = logp0.clone().requires_grad_()
    (0.5 * (k2_logp - ref) ** 2).sum().backward()  # k2 = (log p - log p_ref)^2 / 2
    assert torch.allclose(logp.grad, k2_logp.grad, atol=1e-6)
    k3_logp = logp0.clone().requires_grad_()  # and it is not k3's gradient, 1 - p_ref / p
    ((ref - k3_logp).exp() - 1 - (ref - k3_logp)).sum().backward()
    assert not torch.allclose(logp.grad, k3_logp.grad, atol=1e-3)


def test_k3_corrected_hand_example():
    # p = 0.5, p_ref = 0.25: r = 0.5, k3 = r - 1 - log r = log 2 - 0.5
    k3 = math.log(2) - 0.5
    logp = torch.tensor([[math.log(0.5), math.log(0.5)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.25)]])
    old = torch.tensor([[math.log(0.5), math.log(0.25)]])  # on-policy (ratio 1), and ratio 2
    out = gv.kl_k3_corrected(logp, old, ref)
    assert torch.allclose(out, torch.tensor([[k3, 2 * k3]]), atol=1e-6)
    out.sum().backward()
    # d/dlogp ratio * k3 = ratio * (k3 + 1 - r): at ratio 1, log(p / p_ref) = log 2 (the true KL gradient's
    # weight); at ratio 2, 2 log 2
    assert torch.allclose(logp.grad, torch.tensor([[math.log(2), 2 * math.log(2)]]), atol=1e-6)


# ----------------------------------------------------------------------------- DAPO
def test_overlong_penalty_boundaries():
    lengths = torch.tensor([1, 24, 25, 28, 31, 32])
    # max 32, cache 8: no penalty up to 24 tokens, then -(len - 24) / 8, -1 at the limit
    assert torch.allclose(gv.overlong_penalty(lengths, 32, 8), torch.tensor([0, 0, -1 / 8, -0.5, -7 / 8, -1.0]))
    assert torch.allclose(gv.overlong_penalty(lengths, 32, 8, factor=0.5), torch.tensor([0, 0, -1 / 16, -0.25, -7 / 16, -0.5]))
    assert gv.overlong_penalty(torch.tensor([32]), 32, 32).item() == -1.0  # the band is the whole length
    with pytest.raises(ValueError, match="overlong_cache"):
        gv.overlong_penalty(lengths, 32, 0)


def _toy_sampler(prompt_stream, G=4):
    """Each round draws the next 4 prompts; 'const' prompts get the same reward for all G responses."""
    it = iter(prompt_stream)

    def sample_round():
        prompts = [next(it) for _ in range(4)]
        rewards = torch.stack([torch.full((G,), 0.5) if p.startswith("const") else torch.arange(G).float()
                               for p in prompts])
        return rewards, prompts
    return sample_round


def test_dynamic_sampling_drops_and_replaces_constant_groups():
    stream = ["a", "const1", "b", "const2", "const3", "c", "d", "const4", "e", "f", "g", "h"]
    kept, stats = gv.dynamic_sampling(_toy_sampler(stream), n_groups=4, max_rounds=5)
    assert kept == ["a", "b", "c", "d"]  # the constant groups were dropped, replaced from a second round
    assert stats == {"rounds": 2, "groups": 8, "zero_std": 4, "filled": 0}
    # the bound: one round only, so the two missing groups are filled with dropped ones and reported
    kept, stats = gv.dynamic_sampling(_toy_sampler(stream), n_groups=4, max_rounds=1)
    assert kept == ["a", "b", "const1", "const2"] and stats["filled"] == 2 and stats["rounds"] == 1
    # DDP: another rank still needs groups, so this one samples on (up to the bound)
    kept, stats = gv.dynamic_sampling(_toy_sampler(stream), n_groups=2, max_rounds=3, more=lambda need: True)
    assert kept == ["a", "b"] and stats["rounds"] == 3


def test_pad_rollout_matches_generate_layout():
    out = gv.pad_rollout([[1, 2], [3]], [[7, 0], [8]], pad=0)
    assert out["prompt_len"] == 2
    assert out["tokens"].tolist() == [[1, 2, 7, 0], [0, 3, 8, 0]]
    assert out["attention_mask"].tolist() == [[True] * 4, [False, True, True, False]]
    assert out["response_mask"].tolist() == [[True, True], [True, False]]


# ----------------------------------------------------------------------------- the script
def test_grpo_runs_every_variant_flag(sft_dir, tmp_path):
    """Dynamic sampling with a reward that is constant on half the places' prompts: those groups are
    dropped and more are sampled, the kept groups of several rounds are trained on as one batch;
    with GSPO and REINFORCE++-baseline with the KL in the reward. Then CISPO with k3+ and with the
    bias-corrected k3, and the overlong penalty (not with dynamic sampling: it makes every group's
    rewards differ)."""
    f = tmp_path / "half_constant.py"
    f.write_text("def r(prompts, responses):\n"
                 "    return [float(len(x)) if any(w in p for w in ('cafe', 'hotel', 'cinema')) else 0.0\n"
                 "            for p, x in zip(prompts, responses)]\n")
    small = ["--prompts_per_batch=4", "--group_size=4", "--minibatch_size=8", "--max_new_tokens=16",
             "--eval_repeats=1", "--log_interval=1", "--n_print=0", "--max_iters=2", "--eval_interval=2",
             f"--sft_path={sft_dir}/ckpt.pt"]
    out = str(tmp_path / "a")
    run("grpo.py", *small, f"--out_dir={out}", f"--reward_fns={f}:r", "--dynamic_sampling=True",
        "--max_gen_batches=3", "--objective=gspo", "--advantage=reinforce_baseline", "--kl_in=reward")
    train = [r for r in read_metrics(out) if "policy_loss" in r]
    assert len(train) == 2
    for r in train:  # the books balance: groups with a signal kept, the rest filled, within the bound
        informative = round(4 * r["gen_batches"] * (1 - r["zero_std_frac"]))
        assert 1 <= r["gen_batches"] <= 3 and r["filled_groups"] == max(0, 4 - informative)
        assert r["gen_batches"] == 3 or informative >= 4
    # the k1 the reward carried: exactly 0 while the policy is the reference (iteration 1), then not
    assert train[0]["kl"] == 0 and train[1]["kl"] != 0 and math.isfinite(train[1]["kl"])
    assert max(r["gen_batches"] for r in train) >= 2 and max(r["zero_std_frac"] for r in train) > 0
    for flags in (["--kl_estimator=k3+"], ["--kl_estimator=k3_corrected"], ["--kl_in=reward"]):
        out = str(tmp_path / flags[0][2:].replace("=", "_"))
        p = run("grpo.py", *small, f"--out_dir={out}", "--objective=cispo", *flags, "--max_iters=1",
                "--eval_interval=1", "--overlong_cache=16")
        assert "objective=cispo sets clip_low=1.0, clip_high=4.0, loss_agg='token'" in p.stdout, p.stdout
        cfg = torch.load(f"{out}/ckpt.pt", weights_only=True)["config"]  # what ran, resolved
        assert (cfg["clip_low"], cfg["clip_high"], cfg["loss_agg"]) == (1.0, 4.0, "token")
        last = [r for r in read_metrics(out) if "policy_loss" in r][-1]
        # overlong_cache = max_new_tokens: the penalty is linear, -len / 16, so its mean is -mean length / 16
        assert last["reward/overlong"] == pytest.approx(-last["response_len"] / 16, abs=1e-5)
        assert last["clipfrac_low"] == 0  # CISPO has no floor
        # in the loss: the updated policy's KL (> 0); in the reward: the rollout policy's, still the reference
        assert last["kl"] > 0 if "--kl_in=reward" not in flags else last["kl"] == 0


def test_variant_flags_bad_input(sft_dir, tmp_path):
    ckpt = f"--sft_path={sft_dir}/ckpt.pt", f"--out_dir={tmp_path}/o"
    for flag, msg in [("--objective=trpo", "Use one of: ppo, gspo, cispo"),
                      ("--overlong_cache=99", "--overlong_cache=99")]:  # (one process each: keep them few)
        p = run("grpo.py", *ckpt, flag, ok=False)
        assert p.returncode != 0 and msg in p.stderr, (flag, p.stderr[-500:])
    p = run("grpo.py", *ckpt, "--kl_in=reward", "--kl_estimator=full", ok=False)
    assert p.returncode != 0 and "leave --kl_estimator at k3" in p.stderr
