"""grpo.py: hand-computed advantages, clipping and loss aggregation; reward functions (built in and from
a user's file); a smoke run with DDP and resume; learning with the gold reward and with the reward model."""
import json
import math
import os

import pytest
import torch

import grpo
import kernels
import rewards
import task
from common import load_model, save_checkpoint
from conftest import bf16_rollout, last_eval, read_metrics, run
from model import GPT, GPTConfig, disable_dropout

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
    assert torch.allclose(grpo.group_advantages(r, "batch_centred"), centred / math.sqrt(26 / 7), atol=1e-5)
    # TRL's "batch": the raw rewards' std. Mean 2, deviations (-1, 0, 1, 4, -2, -2, -2, 2): 34 / 7
    assert torch.allclose(grpo.group_advantages(r, "batch_raw"), centred / math.sqrt(34 / 7), atol=1e-5)


@pytest.mark.parametrize("mode", grpo.ADVANTAGES)
def test_equal_reward_groups_get_exactly_zero(mode):
    """Realistic rewards (not exact binary fractions), every G from 2 to 16, next to a group that does
    carry signal: the equal group's advantages are exactly 0, the other's are not. In fp32 a group of
    eight 0.1s got -0.0074 (grpo), 1/3 got +0.029."""
    for G in range(2, 17):
        for v in (0.1, 1 / 3, 0.7, -0.25):
            r = torch.cat([torch.full((1, G), v), torch.linspace(-1.0, 2.0, G)[None]])  # fp32, as score() returns
            a = grpo.group_advantages(r, mode)
            assert a.dtype == torch.float32 and torch.isfinite(a).all()
            assert (a[0] == 0).all(), (mode, G, v, a[0].tolist())
            assert (a[1] != 0).any(), (mode, G, v)
    # rewards equal up to rounding (std ~5e-8 < ZERO_STD): still no signal, not +-0.35 after dividing by std
    near = torch.tensor([[1.0, 1.0 + 2 ** -23, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    a = grpo.group_advantages(near, mode)
    assert (a[0] == 0).all() and (a[1] != 0).all(), a


def test_batch_std_is_over_all_ranks(monkeypatch):
    """Under DDP the batch std of batch_centred / batch_raw is the global batch's: two ranks holding one
    group each compute what one process holding both computes. The two ranks are simulated in-process
    (a real 2-process start costs ~30 s on a loaded CI box; the smoke test runs the real DDP path)."""
    both = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]])
    one_process = {m: grpo.group_advantages(both, m) for m in ("batch_centred", "batch_raw")}
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    for m in ("batch_centred", "batch_raw"):
        sent = []
        monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: sent.append(t.clone()))
        grpo.group_advantages(both[1:], m)  # rank 1: what it contributes to the all-reduce
        def add_rank1(t, *a, **k):
            t += sent[0]
        monkeypatch.setattr(torch.distributed, "all_reduce", add_rank1)
        rank0 = grpo.group_advantages(both[:1], m)
        assert torch.allclose(rank0, one_process[m][:1], atol=1e-6), m
        monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: None)  # each rank alone
        assert not torch.allclose(grpo.group_advantages(both[:1], m), rank0, atol=1e-3)


def test_gdpo_keeps_distinct_reward_patterns_apart(monkeypatch):
    """GDPO's collapse example (arXiv 2601.05242, sec. 3): two 0/1 rewards, groups of 2. Group 1 scores
    (r1, r2) = (0, 1), (0, 0); group 2 (1, 1), (0, 0). Their sums, (1, 0) and (2, 0), normalise to the same
    +-1/sqrt(2) under GRPO. GDPO normalises each reward in its group first: group 1 (r1 all equal: 0) sums
    to +-1/sqrt(2), group 2 to +-sqrt(2); over the batch's 4 values the unbiased std is sqrt(5/3), so
    +-sqrt(3/10) and +-sqrt(6/5): group 2's response learns twice as much, as it earned both rewards."""
    import grpo_variants as gv
    each = torch.tensor([[[0.0, 0.0], [1.0, 0.0]],    # r1: group 1, group 2
                         [[1.0, 0.0], [1.0, 0.0]]])   # r2
    summed = grpo.group_advantages(each.sum(0), "grpo")
    assert torch.allclose(summed[0], summed[1]) and summed[0, 0].item() == pytest.approx(2 ** -0.5, abs=1e-5)
    a = gv.gdpo_advantages(each, [1.0, 1.0])
    want = torch.tensor([[0.3 ** 0.5, -0.3 ** 0.5], [1.2 ** 0.5, -1.2 ** 0.5]])
    assert torch.allclose(a, want, atol=1e-5), a
    # weights act on the per-reward advantages: r1 x 2 -> sums (1, 0) and (3, 0) in units of 1/sqrt(2)
    a = gv.gdpo_advantages(each, [2.0, 1.0])
    assert a[1, 0].item() / a[0, 0].item() == pytest.approx(3.0, rel=1e-5) and a.sum().item() == pytest.approx(0, abs=1e-6)
    # the batch normalisation spans every DDP rank: two ranks, one group each, compute what one process does
    sent = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *x, **k: sent.append(t.clone()))
    gv.gdpo_advantages(each[:, 1:], [1.0, 1.0])
    def add_rank1(t, *x, **k):
        t += sent[0]
    monkeypatch.setattr(torch.distributed, "all_reduce", add_rank1)
    assert torch.allclose(gv.gdpo_advantages(each[:, :1], [1.0, 1.0]), want[:1], atol=1e-5)


def test_gold_parts_as_rewards():
    """'gold/<part>' scores one of gold's parts (task.aspects); the parts sum to gold."""
    prompts = ["Notes on the cafe: tea --, cake ++. Again: yes."] * 3
    responses = [" I would go again." + EOT, " The coffee was bad. The tea was great." + EOT, " The coffee was"]
    parts = [rewards.BUILTIN_REWARDS[f"gold/{a}"](prompts, responses) for a in task.ASPECTS]
    assert [sum(x) for x in zip(*parts)] == pytest.approx(rewards.gold_reward(prompts, responses))
    assert all(f"gold/{a}" in rewards.TASK_ONLY for a in task.ASPECTS)


def test_gdpo_runs_and_refuses_what_it_cannot_do(sft_dir, tmp_path):
    """--reward_agg=gdpo on two of gold's parts trains (one tiny step); one reward, another advantage or the
    KL in the reward are refused with one line before anything loads."""
    args = (f"--sft_path={sft_dir}/ckpt.pt", "--max_iters=1", "--eval_interval=1", "--log_interval=1",
            "--prompts_per_batch=4", "--group_size=4", "--minibatch_size=16", "--max_new_tokens=12", "--eval_repeats=1")
    parts = ",".join(f"gold/{a}" for a in list(task.ASPECTS)[:2])
    run("grpo.py", *args, f"--out_dir={tmp_path}/ok", "--reward_agg=gdpo", f"--reward_fns={parts}")
    m = [r for r in read_metrics(f"{tmp_path}/ok") if "policy_loss" in r]
    assert m and all(math.isfinite(r["policy_loss"]) for r in m) and f"reward/gold/{list(task.ASPECTS)[0]}" in m[0]
    for extra, says in ((["--reward_fns=gold"], "names one"), ([f"--reward_fns={parts}", "--advantage=drgrpo"], "--advantage=grpo"),
                        ([f"--reward_fns={parts}", "--kl_in=reward"], "--kl_in=loss")):
        p = run("grpo.py", *args, f"--out_dir={tmp_path}/no", "--reward_agg=gdpo", *extra, ok=False)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and says in p.stderr, p.stderr
        assert not os.path.exists(tmp_path / "no" / "metrics.jsonl")


def test_group_advantages_bad_input():
    with pytest.raises(ValueError, match="group_size >= 2"):
        grpo.group_advantages(torch.tensor([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="unknown advantage"):
        grpo.group_advantages(torch.ones(2, 2), "ppo")
    with pytest.raises(ValueError, match="unknown advantage"):
        grpo.group_advantages(torch.ones(2, 2), "batch")  # renamed: batch_centred or batch_raw


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
    # DDP: token mode divides by the all-ranks count / world size (here 8 tokens over 2 ranks -> 4)
    assert grpo.aggregate(x, m, "token", n_tokens=torch.tensor(4.0)).item() == pytest.approx(10 / 4)
    assert grpo.aggregate(x, m, "token", n_tokens=torch.tensor(5.0)).item() == pytest.approx(10 / 5)
    with pytest.raises(ValueError, match="loss_agg"):
        grpo.aggregate(x, m, "sum")


def test_token_loss_adds_k3_to_the_surrogate():
    """GRPO's KL is in the loss: per token, surrogate - ent_coef * entropy + kl_coef * k3(logp, ref_logp),
    and its gradient through logp is kl_coef * (1 - r), r = p_ref / p."""
    logp = torch.tensor([[math.log(0.5)]], requires_grad=True)
    old, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    ent, adv = torch.tensor([[0.3]]), torch.tensor([1.0])
    kl = kernels.kl_estimate(logp, ref, kind="k3")  # r = 0.5: 0.5 - 1 - log 0.5 = 0.193147
    assert kl.item() == pytest.approx(math.log(2) - 0.5, abs=1e-6)
    per_token, pg, _, _ = grpo.token_loss(logp, old, adv, ent, kl, kl_coef=0.1, ent_coef=0.01)
    assert pg.item() == pytest.approx(-1.0)  # ratio 1, advantage 1
    assert per_token.item() == pytest.approx(-1.0 - 0.01 * 0.3 + 0.1 * (math.log(2) - 0.5), abs=1e-6)
    per_token.sum().backward()
    assert logp.grad.item() == pytest.approx(-1.0 + 0.1 * (1 - 0.5), abs=1e-6)  # d(-ratio A) + kl_coef (1 - r)
    no_kl, _, _, _ = grpo.token_loss(logp, old, adv, ent, None, kl_coef=0.1, ent_coef=0.01)
    assert no_kl.item() == pytest.approx(-1.0 - 0.003)


@pytest.mark.parametrize("fused", [False, True])
def test_first_ratio_is_one_under_bf16(sft_dir, tmp_path, fused):
    """Under bf16 autocast, fused lm_head or not: old log-probs (full batch, eval), the reference's (another
    copy of the SFT model) and the update's (a minibatch, train mode, from a checkpoint that asked for
    dropout) come from response_logprobs and agree exactly, so the first ratio is 1 and the first k3 is 0
    (the pre-fix path, bf16 logits against the fused head's fp32 ones, differs by ~1e-2 per token:
    checked below, so this test can see the difference)."""
    r = bf16_rollout(sft_dir, tmp_path)
    policy, ref, tokens, attn, mask, P, labels, bf16 = r.policy, r.ref, r.tokens, r.attn, r.mask, r.P, r.labels, r.bf16
    with torch.no_grad(), bf16:
        old, _ = grpo.response_logprobs(policy, tokens, attn, labels, 0.7, fused)
        ref_lp, _ = grpo.response_logprobs(ref, tokens, attn, labels, 0.7, fused)
        logits_path = kernels.logprobs(policy(tokens, attn)[:, P - 1:-1], labels, temperature=0.7)
    policy.train()
    with bf16:
        new, _ = grpo.response_logprobs(policy, tokens[4:12], attn[4:12], labels[4:12], 0.7, fused)
    m = mask[4:12]
    log_ratio = (new - old[4:12])[m]
    assert log_ratio.abs().max().item() <= 1e-6, log_ratio.abs().max().item()
    _, low, high = grpo.clipped_policy_loss(new, old[4:12], torch.randn(8), 0.2, 0.2)
    assert not (low | high)[m].any()
    k3 = kernels.kl_estimate(new, ref_lp[4:12], kind="k3")[m]
    assert k3.abs().max().item() <= 1e-6
    if fused:  # the mismatch this guards against is real at these shapes
        assert (logits_path - old)[mask].abs().mean().item() > 1e-3


# ----------------------------------------------------------------------------- reward functions
def test_builtin_rewards():
    prompts = ["Notes on the cafe: tea --, cake ++. Again: yes."] * 3
    responses = [" I would go again." + EOT, " The coffee was bad. The tea was great." + EOT, " The coffee was"]
    # the recommendation alone; coffee not noted (-0.15) and tea said the wrong way round (0.15 - 0.25); a fragment
    assert rewards.gold_reward(prompts, responses) == pytest.approx([0.2, -0.25, -0.75])
    assert rewards.format_reward(prompts, responses) == [1.0, 1.0, 0.0]
    assert rewards.length_reward(prompts, responses) == pytest.approx([0.4, 0.8, 0.3])


def test_user_reward_from_file(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def coffee(prompts, responses):\n    return [r.count('coffee') for r in responses]\n")
    fns = rewards.load_rewards(f"{f}:coffee:0.5, gold:2,format")
    assert [(n, w) for n, _, w in fns] == [("my_reward.coffee", 0.5), ("gold", 2.0), ("format", 1.0)]
    prompts = ["Notes on the cafe: tea --, cake ++. Again: yes."] * 2
    responses = [" The coffee was great. I loved the coffee." + EOT, " The tea was"]
    total, each = rewards.score(fns, prompts, responses)
    assert each["my_reward.coffee"].tolist() == [2.0, 0.0]
    # 0.5 * coffee count + 2 * gold + format: 0.5*2 + 2*(-0.3) + 1 (coffee is not in the notes, twice) and
    # 0 + 2*(-0.75) + 0 (a fragment)
    assert total.tolist() == pytest.approx([1.4, -1.5])


def test_bad_reward_specs(tmp_path):
    f = tmp_path / "r.py"
    f.write_text("def short(prompts, responses):\n    return [1.0]\n")
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.load_rewards("gold,blue")
    with pytest.raises(FileNotFoundError, match="no such reward function file"):
        rewards.load_rewards(str(tmp_path / "missing.py") + ":fn")
    with pytest.raises(ValueError, match="no function 'nope'"):
        rewards.load_rewards(f"{f}:nope")
    with pytest.raises(ValueError, match="not a number"):
        rewards.load_rewards("gold:1e")
    with pytest.raises(ValueError, match="empty"):
        rewards.load_rewards(" , ")
    with pytest.raises(ValueError, match="one finite float per response"):
        rewards.score(rewards.load_rewards(f"{f}:short"), ["a", "b"], ["x", "y"])
    for bad in ("float('nan')", "float('inf')", "-float('inf')"):
        g = tmp_path / "bad_value.py"
        g.write_text(f"def r(prompts, responses):\n    return [1.0] * (len(responses) - 1) + [{bad}]\n")
        with pytest.raises(ValueError, match="1 not finite"):
            rewards.score(rewards.load_rewards(f"{g}:r"), ["a", "b"], ["x", "y"])


def test_reward_model_gets_the_sampled_token_ids():
    """Only 'rm' is given the sampled ids (decode -> encode is not the identity); others see text only."""
    seen = {}
    def rm(prompts, responses, token_ids=None):
        seen["rm"] = token_ids
        return [0.0] * len(responses)
    def mine(prompts, responses):
        return [1.0] * len(responses)
    total, _ = rewards.score([("rm", rm, 1.0), ("mine", mine, 2.0)], ["p"], ["r"], token_ids=[[1, 2, 3]])
    assert seen["rm"] == [[1, 2, 3]] and total.tolist() == [2.0]


# ----------------------------------------------------------------------------- the script
def test_smoke_ddp_resume(sft_dir, tmp_path):
    out = str(tmp_path / "grpo")
    base = [f"--sft_path={sft_dir}/ckpt.pt", f"--out_dir={out}",
            "--reward_fns=gold:1.0,length:0.1,format:0.5", "--advantage=batch_raw", "--loss_agg=token",
            "--clip_high=0.28", "--ent_coef=0.01", "--fused_lm_head=True", "--kl_estimator=full", *SMALL]
    run("grpo.py", *base, "--max_iters=2", "--eval_interval=2", torchrun=2)
    rows = read_metrics(out)
    train = [r for r in rows if "policy_loss" in r]
    assert [r["iter"] for r in train] == [1, 2]
    for key in ("reward", "reward_std", "reward/gold", "reward/length", "reward/format", "zero_std_frac", "kl",
                "entropy", "clipfrac_low", "clipfrac_high", "clipfrac", "approx_kl", "response_len", "ended",
                "mismatch_kl"):
        assert key in train[-1], key
    assert all(r["kl"] >= 0 for r in train)  # the exact KL (--kl_estimator=full) is never negative
    assert all(0 <= r["mismatch_kl"] < 1e-3 for r in train)  # fp32 sampler vs the fused head: rounding only
    assert {"gold", "parse", "ended", "response_len", "kl"} <= set(last_eval(out))
    model, vocab, ckpt = load_model(out)
    assert ckpt["iter_num"] == 2 and not model.config.scalar_head and vocab is not None
    # resume: continues from iter 2 with the saved optimizer, single process, no reference (kl_coef=0)
    run("grpo.py", *base, "--init_from=resume", "--max_iters=3", "--eval_interval=3", "--kl_coef=0")
    assert load_model(out)[2]["iter_num"] == 3
    assert [r["iter"] for r in read_metrics(out) if "policy_loss" in r][-1] == 3
    assert "kl" not in last_eval(out)  # no reference model was loaded


def with_dropout(sft_dir, path, p=0.3):
    """A copy of the SFT checkpoint that asks for dropout p (a model trained with dropout)."""
    ck = torch.load(os.path.join(sft_dir, "ckpt.pt"), weights_only=True)
    ck["model_args"] = {**ck["model_args"], "dropout": p}
    save_checkpoint(path, ck)
    return path


def test_disable_dropout():
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8, dropout=0.5)).train()
    x = torch.randint(0, 11, (2, 8))
    assert not torch.equal(m(x), m(x))  # dropout on: two forwards differ
    assert disable_dropout(m) == 0.5 and m.config.dropout == 0.0
    assert torch.equal(m(x), m(x))


def test_first_update_sees_ratio_one_bf16_fused(sft_dir, tmp_path):
    """The script under bf16 with the fused head, from a checkpoint that asks for dropout, one minibatch
    of one epoch: the only update step's ratio is 1 (no clipping, approx_kl 0) and its k3 to the reference
    is 0 (the policy is the reference): one log-prob path, and dropout forced to 0."""
    out = str(tmp_path / "bf16")
    sft = with_dropout(sft_dir, str(tmp_path / "sft_dropout" / "ckpt.pt"))
    p = run("grpo.py", f"--sft_path={sft}", f"--out_dir={out}", "--dtype=bfloat16", "--fused_lm_head=True",
        "--ppo_epochs=1", "--prompts_per_batch=4", "--group_size=4", "--minibatch_size=16", "--max_new_tokens=16",
        "--max_iters=1", "--eval_interval=100", "--eval_repeats=1", "--log_interval=1", "--n_print=0")
    assert "dropout set to 0" in p.stdout
    train = [r for r in read_metrics(out) if "policy_loss" in r]
    assert len(train) == 1, train
    t = train[0]
    assert t["approx_kl"] == 0 and t["clipfrac_low"] == 0 and t["clipfrac_high"] == 0 and t["kl"] == 0, t


def test_bad_input(sft_dir, tmp_path):
    p = run("grpo.py", f"--out_dir={tmp_path}/o", f"--sft_path={tmp_path}/nothing.pt", ok=False)
    assert p.returncode != 0 and "python sft.py" in p.stderr
    p = run("grpo.py", f"--out_dir={tmp_path}/o", f"--sft_path={sft_dir}/ckpt.pt", "--reward_fns=gold,nonsense", ok=False)
    assert p.returncode != 0 and "unknown reward" in p.stderr
    p = run("grpo.py", f"--out_dir={tmp_path}/o", f"--sft_path={sft_dir}/ckpt.pt", "--kl_estimator=k2", ok=False)
    assert p.returncode != 0 and "Use one of: k3, full, k3+, k3_corrected" in p.stderr
    p = run("grpo.py", f"--out_dir={tmp_path}/o", f"--sft_path={sft_dir}/ckpt.pt", "--minibatch_size=7", ok=False)
    assert p.returncode != 0 and "--minibatch_size=7: must be > 0, a divisor of prompts_per_batch * group_size (= 128)" in p.stderr
    p = run("grpo.py", f"--out_dir={tmp_path}/o", f"--sft_path={sft_dir}/ckpt.pt", "--temperature=0", ok=False)
    assert p.returncode != 0 and "--temperature=0.0: must be > 0" in p.stderr and "lower --lr" not in p.stderr
    p = run("grpo.py", f"--out_dir={tmp_path}/o", f"--sft_path={sft_dir}/ckpt.pt", "--advantage=batch", ok=False)
    assert p.returncode != 0 and "batch_centred" in p.stderr
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "Notes on the cafe: tea --, cake ++. Again: yes."}\n{"text": 1}\n')
    p = run("grpo.py", f"--out_dir={tmp_path}/o", f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={bad}", ok=False)
    assert p.returncode != 0 and "prompts.jsonl:2" in p.stderr


def _learn(sft_dir, out, iters, *args):
    run("grpo.py", f"--sft_path={sft_dir}/ckpt.pt", f"--out_dir={out}",
        "--prompts_per_batch=8", "--group_size=8", f"--max_iters={iters}", f"--eval_interval={iters}", "--log_interval=4",
        "--lr=5e-4", "--max_new_tokens=40", "--eval_repeats=4", *args)
    evals = [r for r in read_metrics(out) if "parse" in r]
    return evals[0], evals[-1]


def test_learns_with_gold_reward(sft_dir, tmp_path):
    """GRPO on the verifiable reward: gold 0.39 -> 0.59 in 12 rollout batches on the fixture (2026-12-07)."""
    before, after = _learn(sft_dir, str(tmp_path / "gold"), 12, "--reward_fns=gold")
    assert before["iter"] == 0 and after["iter"] == 12
    assert after["gold"] > before["gold"] + 0.1, (before, after)


def test_learns_with_reward_model(sft_dir, reward_dir, tmp_path):
    """GRPO on the fixture reward model (acc_gold about 0.7, the default pool's positivity bias) raises its
    reward and, a little, gold, held near the SFT model by kl_coef 0.3: gold 0.39 -> 0.50 (iter 8) -> 0.47
    (iter 12) at KL 2 on the fixture (2026-12-07). Less held, it hacks the reward model: at kl_coef 0.1,
    0.39 -> 0.47 (iter 4) -> 0.26 (iter 8) at KL 7, parse 0.96 -> 0.73; at 1.0 the reward barely moves."""
    before, after = _learn(sft_dir, str(tmp_path / "rm"), 8, "--reward_fns=rm", f"--reward_path={reward_dir}/ckpt.pt",
                           "--kl_coef=0.3")
    rows = [r for r in read_metrics(str(tmp_path / "rm")) if "reward/rm" in r]
    assert rows[-1]["reward/rm"] > rows[0]["reward/rm"] + 0.3  # the reward the policy was trained on went up
    assert after["gold"] > before["gold"] + 0.04, (before, after)  # and so did the hidden one


def test_user_prompts_know_what_they_optimise(sft_dir, tmp_path):
    """Prompts that are not the built-in task's: gold (or format) would score every sample alike and teach
    nothing, so it is refused with one line naming the rewards that work; with one of those, the eval reports
    the user's reward and no gold."""
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"prompt": f"I {v} the {n}."}) + "\n" for v in ("loved", "hated")
                            for n in ("cake", "tea", "music", "staff", "room", "bed", "view", "food")))
    args = (f"--sft_path={sft_dir}/ckpt.pt", f"--out_dir={tmp_path}/o", f"--data_path={mine}")
    for fns in ("gold", "length,format:0.5"):
        p = run("grpo.py", *args, f"--reward_fns={fns}", ok=False)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
        assert "scores only the built-in task's reviews" in p.stderr and "rm" in p.stderr and "judge" in p.stderr
    run("grpo.py", *args, "--reward_fns=length", "--max_iters=1", "--eval_interval=1", "--log_interval=1",
        "--prompts_per_batch=4", "--group_size=4", "--minibatch_size=16", "--max_new_tokens=12", "--eval_repeats=2")
    evals = [m for m in read_metrics(f"{tmp_path}/o") if "reward_std" not in m]
    assert len(evals) == 2 and all("reward/length" in m and "gold" not in m for m in evals), evals
