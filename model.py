"""
model.py (goldRLHF): one GPT-2 (nanoGPT-style) for every stage, with an optional scalar head (reward model,
critic: one number per position); Hugging Face GPT-2 weights in and out without `transformers`
(from_pretrained, to_hf); batched KV-cached sampling (generate); the log-probs, entropies and exact KLs
every stage trains on (token_logprobs, response_logprobs); a reward model's scores (score_sequences).
"""
import json
import math
import os
import urllib.request
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
from configurator import MissingFile, UserError


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # keep 0 in RL stages: dropout makes the rollout and update log-probs differ
    scalar_head: bool = False  # reward model / value model: one scalar per position instead of logits


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, attn_mask=None, cache=None, pos=0):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.c_attn(x).split(C, dim=2))
        if cache is not None:  # cache: (2, B, nh, max_len, hs), filled up to `pos`
            cache[0, :, :, pos:pos + T], cache[1, :, :, pos:pos + T] = k, v
            k, v = cache[0, :, :, :pos + T], cache[1, :, :, :pos + T]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential()  # named c_fc / c_proj as in GPT-2's checkpoints
        self.mlp.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.mlp.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.mlp.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.mlp.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, attn_mask=None, cache=None, pos=0):
        x = x + self.attn(self.ln_1(x), attn_mask, cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd)))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2
        if cfg.scalar_head:
            self.score_head = nn.Linear(cfg.n_embd, 1)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx, attention_mask=None, kv_cache=None, pos=0, hidden=False):
        """idx (B, T); attention_mask (B, pos+T) bool, True for real tokens (None: plain causal). Returns
        logits (B, T, V), values (B, T) with a scalar head, or with hidden=True the final hidden states
        (B, T, C), from which token_logprobs (fused) never forms the logits."""
        B, T = idx.shape
        if pos + T > self.config.block_size:
            raise ValueError(f"sequence of {pos + T} tokens is longer than block_size "
                             f"{self.config.block_size}: shorten it or use a larger model context")
        mask = None
        if attention_mask is None:
            positions = torch.arange(pos, pos + T, device=idx.device)
            if kv_cache is not None:
                attention_mask = torch.ones(B, pos + T, dtype=torch.bool, device=idx.device)
        if attention_mask is not None:
            # Left padding: real tokens get positions 0, 1, 2, ... whatever their offset.
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, pos:pos + T]
            L = attention_mask.shape[1]
            q = torch.arange(pos, pos + T, device=idx.device)[:, None]
            k = torch.arange(L, device=idx.device)[None, :]
            # causal and not a pad; every query also sees itself, so a pad row is never all -inf (NaN)
            mask = ((k <= q) & attention_mask[:, None, None, :]) | (k == q)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, None if kv_cache is None else kv_cache[i], pos)
        x = self.transformer.ln_f(x)
        if hidden:
            return x
        return self.score_head(x).squeeze(-1) if self.config.scalar_head else self.lm_head(x)

    # -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, eot, temperature=1.0, top_k=None, top_p=None):
        """Sample from B prompts (lists of ids), left-padded to length P; a row stops at `eot` (kept).
        Returns a dict: tokens, attention_mask (B, P+N); response_mask, logprobs (B, N) fp32 (0 where
        masked); prompt_len P; N <= max_new_tokens. logprobs are of softmax(logits / temperature), what RL
        stages score: top_k / top_p only filter sampling (off for RL); temperature=0 is greedy, logprobs at 1."""
        B, P, dev = len(prompts), max(len(p) for p in prompts), self.lm_head.weight.device
        if min(len(p) for p in prompts) == 0:
            raise ValueError("generate: empty prompt")
        L = P + max_new_tokens
        if L > self.config.block_size:
            raise ValueError(f"prompt ({P} tokens) + max_new_tokens ({max_new_tokens}) exceeds block_size "
                             f"{self.config.block_size}: shorten the prompt or lower max_new_tokens")
        tokens = torch.full((B, L), eot, dtype=torch.long, device=dev)
        mask = torch.zeros(B, L, dtype=torch.bool, device=dev)
        for i, p in enumerate(prompts):
            tokens[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
            mask[i, P - len(p):P] = True
        dt = self.lm_head.weight.dtype
        if torch.is_autocast_enabled(dev.type):
            dt = torch.get_autocast_dtype(dev.type)
        nh, hs = self.config.n_head, self.config.n_embd // self.config.n_head
        cache = [torch.empty(2, B, nh, L, hs, dtype=dt, device=dev) for _ in range(self.config.n_layer)]
        logprobs = torch.zeros(B, max_new_tokens, device=dev)
        finished = torch.zeros(B, dtype=torch.bool, device=dev)
        # prefill the cache; the lm_head only at the last prompt position (left padding: real in every row)
        logits = self.lm_head(self(tokens[:, :P], mask[:, :P], kv_cache=cache, hidden=True)[:, -1])
        for t in range(max_new_tokens):
            logits = logits.float() / (temperature if temperature > 0 else 1.0)
            logp = F.log_softmax(logits, dim=-1)
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(F.softmax(filter_logits(logits, top_k, top_p), -1), 1)[:, 0]
            nxt = torch.where(finished, eot, nxt)
            tokens[:, P + t], mask[:, P + t] = nxt, ~finished
            logprobs[:, t] = logp.gather(-1, nxt[:, None])[:, 0].masked_fill(finished, 0.0)
            finished |= nxt == eot
            # checking finished.all() syncs with the host: only every 8 steps, so the GPU runs ahead
            if t == max_new_tokens - 1 or (t % 8 == 7 and bool(finished.all())):
                break
            logits = self(nxt[:, None], mask[:, :P + t + 1], kv_cache=cache, pos=P + t)[:, -1]
        N = t + 1
        return dict(tokens=tokens[:, :P + N], attention_mask=mask[:, :P + N],
                    response_mask=mask[:, P:P + N], logprobs=logprobs[:, :N], prompt_len=P)

    # -------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path, scalar_head=False, cache_dir=None):
        """GPT-2 weights in Hugging Face's layout: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'
        (downloaded once into cache_dir), or a local directory / .bin / .safetensors file."""
        path = _find_hf_weights(name_or_path, cache_dir)
        if path.endswith(".safetensors"):
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise ImportError(f"{path}: reading .safetensors needs `pip install safetensors`") from None
        try:
            sd = load_file(path) if path.endswith(".safetensors") else torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # the kind is enough: some of torch.load's messages are many lines long
            raise UserError(f"{path}: not readable GPT-2 weights ({getattr(e, 'strerror', None) or type(e).__name__})") from None
        if not isinstance(sd, dict) or not any(k.startswith(("h.", "transformer.h.")) for k in sd):
            raise UserError(f"{path}: not GPT-2 weights (no transformer blocks h.* in it)")
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("h."))
        V, C = sd["wte.weight"].shape
        cfg_file = os.path.join(os.path.dirname(path), "config.json")
        try:
            n_head = json.load(open(cfg_file, encoding="utf-8"))["n_head"] if os.path.exists(cfg_file) else \
                {768: 12, 1024: 16, 1280: 20, 1600: 25}.get(C, max(1, C // 64))
        except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError: not UTF-8, or not JSON
            raise UserError(f"{cfg_file}: not a GPT-2 config.json with n_head ({type(e).__name__})") from None
        model = cls(GPTConfig(block_size=sd["wpe.weight"].shape[0], vocab_size=V, n_layer=n_layer,
                              n_head=n_head, n_embd=C, scalar_head=scalar_head))
        own = model.state_dict()
        for k, v in sd.items():
            if k.endswith((".attn.bias", ".attn.masked_bias")) or k == "lm_head.weight":
                continue  # causal-mask buffers; lm_head is tied to wte
            if k.endswith(HF_TRANSPOSED):
                v = v.t()  # HF's Conv1D stores (in, out); nn.Linear wants (out, in)
            if own["transformer." + k].shape != v.shape:
                raise UserError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(own['transformer.' + k].shape)}")
            own["transformer." + k].copy_(v)
        return model


HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
GPT2_SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def _find_hf_weights(name_or_path, cache_dir=None):
    if os.path.isdir(name_or_path):
        for f in ("model.safetensors", "pytorch_model.bin"):
            if os.path.exists(os.path.join(name_or_path, f)):
                return os.path.join(name_or_path, f)
        raise MissingFile(f"{name_or_path}: no model.safetensors or pytorch_model.bin in it")
    if os.path.isfile(name_or_path):
        return name_or_path
    if name_or_path not in GPT2_SIZES:
        raise MissingFile(f"{name_or_path}: not a file, directory or one of {GPT2_SIZES}")
    d = os.path.join(cache_dir or os.path.expanduser("~/.cache/goldrlhf"), name_or_path)
    f = os.path.join(d, "pytorch_model.bin")
    if not os.path.exists(f):
        os.makedirs(d, exist_ok=True)
        for name in ("config.json", "pytorch_model.bin"):
            url = f"https://huggingface.co/openai-community/{name_or_path}/resolve/main/{name}"
            print(f"downloading {url}")
            try:
                urllib.request.urlretrieve(url, os.path.join(d, name + ".tmp"))
            except OSError as e:
                raise UserError(f"could not download {url} ({e}); offline? put the weights in a "
                                   f"directory and pass its path instead") from None
            os.replace(os.path.join(d, name + ".tmp"), os.path.join(d, name))
    return f


def to_hf(model, out_dir):
    """Write `model` as a Hugging Face GPT-2 checkpoint (pytorch_model.bin + config.json)."""
    c = model.config
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith("transformer."):
            k = k.removeprefix("transformer.")
            sd[k] = (v.t() if k.endswith(HF_TRANSPOSED) else v).contiguous().clone()
    sd["lm_head.weight"] = sd["wte.weight"]
    os.makedirs(out_dir, exist_ok=True)
    torch.save(sd, os.path.join(out_dir, "pytorch_model.bin"))
    json.dump(dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=c.vocab_size,
                   n_positions=c.block_size, n_ctx=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                   n_head=c.n_head, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                   bos_token_id=50256, eos_token_id=50256), open(os.path.join(out_dir, "config.json"), "w"), indent=2)


def filter_logits(logits, top_k=None, top_p=None):
    """Top-k then nucleus (top-p) filtering of (B, V) logits: the rest is set to -inf."""
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = F.softmax(sorted_logits, -1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def last_index(mask):
    """(B, T) bool -> (B,) index of the last True in each row (the last real token)."""
    return (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)


def gather_last(values, mask):
    """values (B, T), mask (B, T) bool -> (B,): the value at the last real token (a reward model's score)."""
    return values.gather(1, last_index(mask)[:, None])[:, 0]


def token_logprobs(model, idx, labels, attention_mask=None, temperature=1.0, fused=False, entropy=True, ref=None):
    """(logp, entropy or None[, kl]), each (B, N) fp32, under softmax(logits / temperature), of labels
    (B, N), the tokens after idx's (B, T) last N positions (-100: none, log-prob 0). ref=(ref_hidden,
    ref_weight) adds the exact KL(p || p_ref), differentiable in p only. fused=True never holds the
    (B, N, V) logits (kernels.linear_*). `model` may be wrapped (torch.compile, DDP)."""
    x = model(idx, attention_mask, hidden=True)[:, idx.shape[1] - labels.shape[1]:]
    raw = getattr(model, "module", model)  # DDP -> the model (or a compiled one)
    w = getattr(raw, "_orig_mod", raw).lm_head.weight
    if fused:
        dev = x.device.type
        if torch.is_autocast_enabled(dev):  # the operands autocast would give lm_head (bf16)
            x, w = x.to(torch.get_autocast_dtype(dev)), w.to(torch.get_autocast_dtype(dev))
        if entropy:
            out = kernels.linear_logprobs_entropy(x, w, labels, temperature=temperature)
        else:
            out = (kernels.linear_logprobs(x, w, labels, temperature=temperature), None)
        if ref is not None:
            out += (kernels.linear_kl(x, w, ref[0].to(x.dtype), ref[1].to(w.dtype), temperature),)
        return out
    logits = F.linear(x, w)
    if entropy:
        out = kernels.logprobs_entropy(logits, labels, temperature=temperature)
    else:
        out = (kernels.logprobs(logits, labels, temperature=temperature), None)
    if ref is not None:
        out += (kernels.kl(logits, F.linear(ref[0], ref[1]).detach(), temperature),)
    return out


def response_logprobs(model, tokens, attention_mask, labels, temperature=1.0, fused=False, ref=None):
    """The one call for every log-prob a ratio or KL compares (rollout, reference, update), so the first
    ratio is exactly 1 and the first KL 0. tokens, attention_mask (B, P+N) from generate(); labels (B, N),
    -100 after a response ends. Returns token_logprobs' outputs, each (B, N)."""
    return token_logprobs(model, tokens[:, :-1], labels, attention_mask[:, :-1], temperature, fused, ref=ref)


def score_sequences(rm, seqs, pad_id, gain=1.0, bias=0.0, chunk=256, forward=None):
    """Reward model `rm`'s scores (N,) fp32 of N token-id lists (prompt + response), gain * raw + bias
    (reward.py's normalisation). Call it under autocast, and no_grad unless training through it. Score the
    ids as sampled: decoding then encoding is not the identity (two sampled "." decode to "..", one other
    BPE token). forward: read instead of rm(x, mask), e.g. rewards.RewardEnsemble.spread."""
    device, out = next(rm.parameters()).device, []
    for i in range(0, len(seqs), chunk):
        part = seqs[i:i + chunk]
        L = max(len(s) for s in part)
        x = torch.full((len(part), L), pad_id, dtype=torch.long)
        m = torch.zeros(len(part), L, dtype=torch.bool)
        for j, s in enumerate(part):
            x[j, :len(s)], m[j, :len(s)] = torch.tensor(s), True
        x, m = x.to(device), m.to(device)
        out.append(gain * gather_last((forward or rm)(x, m).float(), m) + bias)
    return torch.cat(out)


def disable_dropout(model):
    """Every dropout of `model` (and its config) to 0, as TRL's: two forwards compared (rollout vs update,
    policy vs reference) must agree, so the first ratio is 1. Returns the dropout it had."""
    was = model.config.dropout
    model.config.dropout = 0.0
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(m, CausalSelfAttention):
            m.dropout = 0.0
    return was
