"""The rollout / trainer mismatch (common.mismatch_kl): the sampler's KV-cached log-probs against the update's
own forward for the same tokens, logged as mismatch_kl by ppo.py and grpo.py."""
import math

import pytest
import torch

import common
import data
import task
from model import response_logprobs


def test_mismatch_kl_worked_example():
    """k3 per token with r = p_trainer / p_sampler: a token at 0.5 under the sampler and 0.25 under the
    trainer gives 0.5 - 1 + log 2 = 0.19315; equal log-probs give 0; masked positions count nothing; the mean
    is over responses of the sum over tokens."""
    sampler = torch.tensor([[math.log(0.5), math.log(0.9), -3.0], [math.log(0.5), 0.0, 0.0]])
    trainer = torch.tensor([[math.log(0.25), math.log(0.9), 5.0], [math.log(0.5), 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert common.mismatch_kl(sampler, trainer, mask).item() == pytest.approx((0.5 - 1 + math.log(2)) / 2, abs=1e-6)
    assert common.mismatch_kl(sampler, sampler, mask).item() == 0


@pytest.mark.parametrize("fused", [False, True])
def test_mismatch_is_rounding_only_in_fp32_and_bf16(sft_dir, fused):
    """On the SFT model, 64 train prompts at temperature 1: generate's log-probs against response_logprobs
    (plain or fused head) are equal up to rounding in fp32 and within bf16's rounding under CPU autocast,
    while a real difference between the two (the trainer at temperature 0.9) is far above either bound."""
    policy, vocab, _ = common.load_model(sft_dir)
    policy.eval()
    tok = data.Tokenizer(vocab)
    ids = data.encode_prompts(tok, task.prompts("train")[:64], 32)
    got = {}
    for name, ctx in (("fp32", torch.autocast("cpu", enabled=False)), ("bf16", torch.autocast("cpu", dtype=torch.bfloat16))):
        torch.manual_seed(0)
        with torch.no_grad(), ctx:
            out = policy.generate(ids, 24, tok.eot, temperature=1.0)
            tokens, attn, mask, P = out["tokens"], out["attention_mask"], out["response_mask"], out["prompt_len"]
            labels = tokens[:, P:].masked_fill(~mask, -100)
            logp, _ = response_logprobs(policy, tokens, attn, labels, 1.0, fused)
            other, _ = response_logprobs(policy, tokens, attn, labels, 0.9, fused)
        got[name] = common.mismatch_kl(out["logprobs"], logp, mask).item()
        got[name + "_t0.9"] = common.mismatch_kl(out["logprobs"], other, mask).item()
    print(fused, got)
    assert 0 <= got["fp32"] < 1e-6 and 0 <= got["bf16"] < 5e-3, got
    assert got["fp32_t0.9"] > 2e-2 and got["bf16_t0.9"] > 2e-2, got


def test_device_script_runs_small_on_cpu():
    """bench/mismatch.py (the GPU table of bench/RESULTS.md) keeps running: four rows, fp32's mismatch at
    rounding level."""
    from conftest import run
    out = run("bench/mismatch.py", "--device=cpu", "--small").stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(("float32", "bfloat16"))]
    assert [r[:2] for r in rows] == [["float32", "plain"], ["float32", "fused"], ["bfloat16", "plain"],
                                     ["bfloat16", "fused"]], out
    assert all(0 <= float(r[3]) < 1e-6 for r in rows[:2]) and all(float(r[3]) >= 0 for r in rows), out


def test_online_dpo_mismatch(sft_dir):
    """dpo.py --online: common.sampler_mismatch reads generate()'s outputs that data.sample_responses keeps and scores
    their tokens with the trainer's own forward: rounding at the same temperature, far more at 0.9."""
    policy = common.load_model(sft_dir)[0].eval()
    tok = data.Tokenizer(common.load_model(sft_dir)[1])
    torch.manual_seed(0)
    gens = []
    with torch.no_grad():
        texts, _, _ = data.sample_responses(policy, tok, task.prompts("train")[:24], 24, 1.0, batch_size=16, keep=gens)
        same, other = common.sampler_mismatch(policy, gens), common.sampler_mismatch(policy, gens, temperature=0.9)
    assert len(gens) == 2 and sum(len(g["tokens"]) for g in gens) == len(texts) == 24
    assert 0 <= same < 1e-5 and other > 2e-2, (same, other)
