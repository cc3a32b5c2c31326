"""model.py: GPT-2 weights in and out, KV-cached batched sampling, scalar head, checkpoints."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from common import check_vocab, cosine_lr, load_checkpoint, load_model, model_args_of, save_checkpoint
from model import GPT, GPTConfig, filter_logits, gather_last, last_index, score_sequences, to_hf, token_logprobs

CFG = dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG, **kw})).eval()


def hf_state_dict(seed=0, prefix="transformer.", V=61, C=16, L=2, T=32):
    """A random checkpoint in Hugging Face's GPT2LMHeadModel layout: Conv1D weights stored (in, out),
    causal-mask buffers, a tied lm_head."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    sd = {f"{prefix}wte.weight": r(V, C), f"{prefix}wpe.weight": r(T, C),
          f"{prefix}ln_f.weight": 1 + r(C), f"{prefix}ln_f.bias": r(C)}
    for i in range(L):
        h = f"{prefix}h.{i}."
        sd.update({h + "ln_1.weight": 1 + r(C), h + "ln_1.bias": r(C), h + "ln_2.weight": 1 + r(C), h + "ln_2.bias": r(C),
                   h + "attn.c_attn.weight": r(C, 3 * C), h + "attn.c_attn.bias": r(3 * C),
                   h + "attn.c_proj.weight": r(C, C), h + "attn.c_proj.bias": r(C),
                   h + "mlp.c_fc.weight": r(C, 4 * C), h + "mlp.c_fc.bias": r(4 * C),
                   h + "mlp.c_proj.weight": r(4 * C, C), h + "mlp.c_proj.bias": r(C),
                   h + "attn.bias": torch.tril(torch.ones(1, 1, T, T)), h + "attn.masked_bias": torch.tensor(-1e4)})
    sd["lm_head.weight"] = sd[f"{prefix}wte.weight"]
    return sd


def direct_gpt2_logits(sd, idx, n_head, prefix="transformer."):
    """GPT-2's forward pass written out from the raw HF tensors (x @ W + b for Conv1D), independent of
    model.py: what from_pretrained must reproduce."""
    w = lambda k: sd[prefix + k]
    T = idx.shape[1]
    x = w("wte.weight")[idx] + w("wpe.weight")[:T]
    L = 1 + max(int(k[len(prefix):].split(".")[1]) for k in sd if k.startswith(prefix + "h."))
    for i in range(L):
        h = f"h.{i}."
        a = F.layer_norm(x, x.shape[-1:], w(h + "ln_1.weight"), w(h + "ln_1.bias"))
        q, k, v = (a @ w(h + "attn.c_attn.weight") + w(h + "attn.c_attn.bias")).split(x.shape[-1], -1)
        heads = lambda t: t.view(1, T, n_head, -1).transpose(1, 2)
        att = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(q.shape[-1] // n_head)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        y = (att @ heads(v)).transpose(1, 2).reshape(1, T, -1)
        x = x + y @ w(h + "attn.c_proj.weight") + w(h + "attn.c_proj.bias")
        m = F.layer_norm(x, x.shape[-1:], w(h + "ln_2.weight"), w(h + "ln_2.bias"))
        m = F.gelu(m @ w(h + "mlp.c_fc.weight") + w(h + "mlp.c_fc.bias"), approximate="tanh")
        x = x + m @ w(h + "mlp.c_proj.weight") + w(h + "mlp.c_proj.bias")
    x = F.layer_norm(x, x.shape[-1:], w("ln_f.weight"), w("ln_f.bias"))
    return x @ w("wte.weight").t()


@pytest.mark.parametrize("prefix", ["transformer.", ""])
def test_from_pretrained_matches_direct_gpt2(tmp_path, prefix):
    sd = hf_state_dict(prefix=prefix)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text('{"n_head": 2}')
    idx = torch.randint(0, 61, (1, 20))
    expected = direct_gpt2_logits(sd, idx, n_head=2, prefix=prefix)
    for where in (str(tmp_path), str(tmp_path / "pytorch_model.bin")):
        m = GPT.from_pretrained(where).eval()
        assert (m.config.n_layer, m.config.n_head, m.config.vocab_size) == (2, 2, 61)
        with torch.no_grad():
            err = (m(idx) - expected).abs().max().item()
        assert err < 1e-4, f"max logit error {err}"


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        GPT.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a file, directory"):
        GPT.from_pretrained("no-such-model")


def test_export_to_hf_roundtrip(tmp_path):
    m = tiny()
    to_hf(m, str(tmp_path))
    sd = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert sd["h.0.attn.c_attn.weight"].shape == (16, 48)  # Conv1D layout (in, out)
    idx = torch.randint(0, 61, (1, 12))
    with torch.no_grad():
        err = (direct_gpt2_logits(sd, idx, n_head=2, prefix="") - m(idx)).abs().max().item()
        assert err < 1e-4, f"exported weights give different logits: {err}"
        assert torch.allclose(GPT.from_pretrained(str(tmp_path)).eval()(idx), m(idx), atol=1e-5)


PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16]]


def test_greedy_batched_equals_one_by_one():
    m = tiny()
    batch = m.generate(PROMPTS, 10, eot=0, temperature=0)
    P = batch["prompt_len"]
    for i, p in enumerate(PROMPTS):
        one = m.generate([p], 10, eot=0, temperature=0)
        n = int(one["response_mask"].sum())
        assert n == int(batch["response_mask"][i].sum())
        assert batch["tokens"][i, P:P + n].tolist() == one["tokens"][0, len(p):len(p) + n].tolist()


def test_kv_cached_equals_uncached():
    m = tiny(1)
    for p in PROMPTS:
        seq = list(p)
        with torch.no_grad():
            for _ in range(8):  # greedy without any cache: a full forward for every new token
                seq.append(int(m(torch.tensor([seq]))[0, -1].argmax()))
        out = m.generate([p], 8, eot=-1, temperature=0)  # eot=-1: never stops early
        assert out["tokens"][0].tolist() == seq


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_logprobs_equal_full_forward(temperature):
    """The classic RLHF bug: rollout log-probs that differ from the trainer's (off-by-one, temperature)."""
    m = tiny(2)
    torch.manual_seed(0)
    out = m.generate(PROMPTS, 12, eot=3, temperature=temperature)
    P, mask = out["prompt_len"], out["response_mask"]
    with torch.no_grad():
        logits = m(out["tokens"], out["attention_mask"])[:, P - 1:-1].float() / temperature
    full = F.log_softmax(logits, -1).gather(-1, out["tokens"][:, P:, None])[..., 0] * mask
    err = (full - out["logprobs"]).abs().max().item()
    assert err < 1e-5, f"sampling vs forward log-prob error {err}"


def test_stops_per_sequence_at_eot():
    m = tiny(3, vocab_size=6)  # 6 tokens: <|endoftext|> (4) comes up often, at different steps per row
    torch.manual_seed(0)
    out = m.generate([[1, 2], [3], [1, 2, 3, 5], [5, 5]], 20, eot=4, temperature=1.0)
    P, mask, toks = out["prompt_len"], out["response_mask"], out["tokens"]
    lengths = mask.sum(1).tolist()
    assert len(set(lengths)) > 1, "rows should stop at different steps"
    for i, n in enumerate(lengths):
        resp = toks[i, P:P + n].tolist()
        assert 4 not in resp[:-1]  # nothing after the first <|endoftext|> is part of the response
        assert mask[i, :n].all() and not mask[i, n:].any()
        assert n == 20 or resp[-1] == 4
        assert (out["logprobs"][i, n:] == 0).all() and (out["logprobs"][i, :n] < 0).all()
        assert (toks[i, P + n:] == 4).all()  # finished rows are padded with <|endoftext|>


def test_generate_rejects_too_long_prompt():
    with pytest.raises(ValueError, match="exceeds block_size"):
        tiny().generate([[1] * 30], 10, eot=0)


def test_filter_logits_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # nucleus 0.7: the top two (0.5 + 0.3 = 0.8 >= 0.7) stay
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.45)).tolist() == [[False, True, True, True]]


def test_left_padding_does_not_change_logits():
    m = tiny(4)
    p = torch.tensor([[7, 8, 9, 10]])
    padded = torch.tensor([[0, 0, 7, 8, 9, 10]])
    mask = torch.tensor([[False, False, True, True, True, True]])
    with torch.no_grad():
        assert torch.allclose(m(p)[0], m(padded, mask)[0, 2:], atol=1e-5)


def test_scalar_head_and_gather_last():
    m = tiny(5, scalar_head=True)
    idx = torch.randint(0, 61, (3, 7))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0, 0]]).bool()
    v = m(idx, mask)
    assert v.shape == (3, 7)
    assert last_index(mask).tolist() == [4, 6, 2]
    assert torch.equal(gather_last(v, mask), torch.stack([v[0, 4], v[1, 6], v[2, 2]]))


def test_checkpoint_roundtrip_and_head_switch(tmp_path):
    m = tiny(6)
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, dict(model=m.state_dict(), model_args=model_args_of(m), optimizer={}, iter_num=3,
                               config={"lr": 1.0}, vocab=[1, 2, 3]))
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # the temp file was renamed away
    m2, vocab, ck = load_model(str(tmp_path))
    assert vocab == [1, 2, 3] and ck["iter_num"] == 3
    idx = torch.randint(0, 61, (1, 5))
    assert torch.equal(m2.eval()(idx), m(idx))
    rm, _, _ = load_model(path, scalar_head=True)  # an SFT model becomes the start of a reward model
    assert rm(idx).shape == (1, 5)
    assert torch.equal(rm.transformer.h[0].attn.c_attn.weight, m.transformer.h[0].attn.c_attn.weight)


def test_missing_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint here"):
        load_checkpoint(str(tmp_path))
    (tmp_path / "ckpt.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(str(tmp_path))


def test_check_vocab():
    check_vocab([1, 2], [1, 2], "same")
    with pytest.raises(ValueError, match="vocabularies differ"):
        check_vocab([1, 2], None, "policy vs reward model")
    with pytest.raises(ValueError, match="vocabularies differ"):
        check_vocab([1, 2], [1, 3], "policy vs reward model")


def test_cosine_lr():
    assert cosine_lr(0, 1.0, 10, 100) == pytest.approx(1 / 11)
    assert cosine_lr(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert cosine_lr(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert cosine_lr(55, 1.0, 10, 100) == pytest.approx(0.55)


@pytest.mark.parametrize("fused", [False, True])
def test_token_logprobs_returns_logprobs_and_entropy(fused):
    """token_logprobs(model, idx, labels) gives the log-probs / entropies of the last N positions' next tokens, with and
    without the fused lm_head path (--fused_lm_head), matching log_softmax of the logits, and so do the
    gradients of every parameter (the tied lm_head / wte weight included)."""
    torch.manual_seed(0)
    m = tiny()
    idx = torch.randint(0, 61, (3, 12))
    labels = torch.randint(0, 61, (3, 5))
    labels[1, 2] = -100
    logp, ent = token_logprobs(m, idx, labels, temperature=0.7, fused=fused)
    (logp.sum() + 0.5 * ent.sum()).backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters()}
    m.zero_grad()
    lsm = F.log_softmax(m(idx)[:, -5:] / 0.7, -1)
    want_logp = lsm.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * (labels != -100)
    want_ent = -(lsm.exp() * lsm).sum(-1)
    (want_logp.sum() + 0.5 * want_ent.sum()).backward()
    assert logp.shape == ent.shape == (3, 5) and logp[1, 2] == 0
    assert torch.allclose(logp, want_logp, atol=1e-5), (logp - want_logp).abs().max()
    assert torch.allclose(ent, want_ent, atol=1e-5), (ent - want_ent).abs().max()
    for k, p in m.named_parameters():
        assert torch.allclose(grads[k], p.grad, atol=1e-5), (k, (grads[k] - p.grad).abs().max())


@pytest.mark.parametrize("fused", [False, True])
def test_token_logprobs_with_ref_returns_exact_kl(fused):
    """token_logprobs(model, idx, labels, ref=(ref_hidden, ref_weight)) also returns the exact full-vocabulary KL to the
    reference at each position (kernels.kl, or kernels.linear_kl when fused): it matches sum p (log p -
    log p_ref) of the two models' logits, its gradients reach every policy parameter and none the reference."""
    torch.manual_seed(0)
    m, ref = tiny(0), tiny(1)
    with torch.no_grad():  # sharper distributions than the 0.02-std init's near-uniform ones
        m.lm_head.weight.mul_(20), ref.lm_head.weight.mul_(20)
    idx = torch.randint(0, 61, (3, 12))
    labels = torch.randint(0, 61, (3, 5))
    ref_hidden = ref(idx, hidden=True)[:, -5:]
    logp, ent, kl = token_logprobs(m, idx, labels, temperature=0.7, fused=fused, ref=(ref_hidden, ref.lm_head.weight))
    kl.sum().backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters()}
    m.zero_grad()
    lp, lr = F.log_softmax(m(idx)[:, -5:] / 0.7, -1), F.log_softmax(ref(idx)[:, -5:].detach() / 0.7, -1)
    want = (lp.exp() * (lp - lr)).sum(-1)
    want.sum().backward()
    assert kl.shape == (3, 5) and want.min() > 0.01, "the two random models should be far apart"
    assert torch.allclose(kl, want, atol=1e-5), (kl - want).abs().max()
    for k, p in m.named_parameters():
        assert torch.allclose(grads[k], p.grad, atol=1e-5), (k, (grads[k] - p.grad).abs().max())
    assert all(p.grad is None for p in ref.parameters()), "the reference must not be trained"


@pytest.mark.parametrize("fused", [False, True])
def test_token_logprobs_entropy_false_gives_the_same_logprobs_and_grads(fused):
    """token_logprobs(model, idx, labels, entropy=False) (SFT, DPO: log-probs only, no entropy computed) returns (logp, None)
    with the log-probs and parameter gradients of the entropy=True call."""
    torch.manual_seed(0)
    m = tiny()
    idx = torch.randint(0, 61, (3, 12))
    labels = torch.randint(0, 61, (3, 5))
    labels[0, 1] = -100
    out = {}
    for entropy in (True, False):
        logp, ent = token_logprobs(m, idx, labels, temperature=0.7, fused=fused, entropy=entropy)
        assert (ent is None) == (not entropy)
        logp.pow(2).sum().backward()
        out[entropy] = logp.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}
        m.zero_grad()
    assert torch.allclose(out[True][0], out[False][0], atol=1e-6) and out[False][0][0, 1] == 0
    for k, g in out[True][1].items():
        assert torch.allclose(g, out[False][1][k], atol=1e-6), (k, (g - out[False][1][k]).abs().max())


def test_score_sequences_reads_each_sequence_at_its_last_token():
    """score_sequences pads token lists to the right in chunks and reads the scalar head at each row's last
    real token, as gain * raw + bias: the same as scoring each sequence alone, whatever the chunk size."""
    torch.manual_seed(0)
    rm = GPT(GPTConfig(block_size=16, vocab_size=61, n_layer=2, n_head=2, n_embd=16, scalar_head=True)).eval()
    seqs = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12, 13, 14], [15, 16]]
    alone = torch.stack([rm(torch.tensor([s]))[0, -1] for s in seqs]).detach()
    with torch.no_grad():
        for chunk in (1, 2, 256):
            got = score_sequences(rm, seqs, pad_id=0, gain=2.0, bias=-0.5, chunk=chunk)
            assert got.shape == (5,) and torch.allclose(got, 2.0 * alone - 0.5, atol=1e-5), (chunk, got)


def test_eval_due():
    """Every eval_interval iterations and at the end; not at the iteration a run resumed from."""
    from common import eval_due
    assert [i for i in range(11) if eval_due(i, 4, 10)] == [0, 4, 8, 10]
    assert [i for i in range(4, 11) if eval_due(i, 4, 10, resumed_at=4)] == [8, 10]
