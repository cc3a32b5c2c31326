"""
model.py: one GPT-2, shared by every stage of goldRLHF.

- GPT: the GPT-2 architecture (nanoGPT-style), scaled_dot_product_attention, optional scalar head
  (reward model / critic): with `scalar_head=True` forward() returns one number per position.
- GPT.from_pretrained: Hugging Face GPT-2 weights without `transformers` (local file/dir or download).
- GPT.generate: batched, KV-cached sampling for prompts of different lengths (left padding).
- to_hf: export back to the Hugging Face GPT-2 layout.
- Training utilities every stage shares: runtime setup (device, dtype, DDP), checkpoints (atomic),
  model loading, the optimizer, the LR schedule, metrics logging.
"""
import json
import math
import os
import random
import time
import urllib.request
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from types import SimpleNamespace

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

    def forward(self, idx, attention_mask=None, kv_cache=None, pos=0, hidden=False, labels=None,
                temperature=1.0, fused=False, ref=None, entropy=True):
        """idx: (B, T) token ids. attention_mask: (B, pos+T) bool, True for real tokens, over the cache
        and the new tokens (None: no padding, plain causal). Returns logits (B, T, V), or values (B, T)
        with a scalar head, or the final hidden states (B, T, C) with hidden=True.
        labels (B, N), N <= T: the token that follows each of the last N positions (-100: none). Returns
        their log-probs and the entropies (B, N) fp32 under softmax(logits / temperature) instead of the
        logits; fused=True gets them straight from the hidden states and the lm_head weight
        (kernels.linear_logprobs_entropy), never holding the (B, N, V) logits in memory.
        entropy=False: a caller that only needs the log-probs (SFT, DPO) gets None in the entropy's place and
        does not pay for it (on the unfused path, another pass over the (B, N, V) logits kept for backward).
        ref=(ref_hidden, ref_weight), a reference model's final hidden states at the same N positions and
        its lm_head weight: also return the exact KL(p || p_ref) (B, N) at each position (kernels.kl of
        the two logits, or kernels.linear_kl from the hidden states when fused), differentiable here only."""
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
        if labels is not None:
            x = x[:, T - labels.shape[1]:]
            if fused:
                w, dev = self.lm_head.weight, x.device.type
                if torch.is_autocast_enabled(dev):  # the operands autocast would give lm_head (bf16)
                    x, w = x.to(torch.get_autocast_dtype(dev)), w.to(torch.get_autocast_dtype(dev))
                if entropy:
                    out = kernels.linear_logprobs_entropy(x, w, labels, temperature=temperature)
                else:
                    out = (kernels.linear_logprobs(x, w, labels, temperature=temperature), None)
                if ref is not None:
                    out += (kernels.linear_kl(x, w, ref[0].to(x.dtype), ref[1].to(w.dtype), temperature),)
                return out
            logits = self.lm_head(x)
            if entropy:
                out = kernels.logprobs_entropy(logits, labels, temperature=temperature)
            else:
                out = (kernels.logprobs(logits, labels, temperature=temperature), None)
            if ref is not None:
                out += (kernels.kl(logits, F.linear(ref[0], ref[1]).detach(), temperature),)
            return out
        return self.score_head(x).squeeze(-1) if self.config.scalar_head else self.lm_head(x)

    # -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, eot, temperature=1.0, top_k=None, top_p=None):
        """Sample continuations of a batch of prompts of different lengths.

        prompts: list of B lists of token ids. Prompts are left-padded to length P so that every
        response starts at column P. A sequence stops at `eot` (kept as its last response token).
        Returns a dict:
          tokens (B, P+N) long, attention_mask (B, P+N) bool, response_mask (B, N) bool,
          logprobs (B, N) fp32 (0 where masked), prompt_len P (int). N <= max_new_tokens.
        `logprobs` are log softmax(logits / temperature) of the sampled tokens, the distribution RL
        stages score (top_k / top_p only filter what is sampled; leave them off for RL). With
        temperature=0 decoding is greedy and logprobs are at temperature 1.
        """
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
            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("h."))
        V, C = sd["wte.weight"].shape
        cfg_file = os.path.join(os.path.dirname(path), "config.json")
        n_head = json.load(open(cfg_file))["n_head"] if os.path.exists(cfg_file) else \
            {768: 12, 1024: 16, 1280: 20, 1600: 25}.get(C, max(1, C // 64))
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
    """values (B, T), mask (B, T) bool -> (B,): the value at each row's last real token. A reward model
    reads its score there (after the <|endoftext|> that ends the response, when it ended)."""
    return values.gather(1, last_index(mask)[:, None])[:, 0]


# -----------------------------------------------------------------------------------------------------
# Training utilities shared by the stages.

def setup(device="auto", dtype="auto", seed=1337):
    """Device, autocast context and DDP (under torchrun). Returns a namespace the stages read."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world = 0, 0, 1
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if ddp:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        world = int(os.environ["WORLD_SIZE"])
        torch.distributed.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"dtype {dtype!r}: use 'float32' or 'bfloat16' (fp16 would need loss scaling)")
    torch.manual_seed(seed + rank)  # each rank samples different data and responses
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=torch.bfloat16)
    return SimpleNamespace(device=device, device_type=device_type, dtype=dtype, ctx=ctx, ddp=ddp,
                           rank=rank, world_size=world, master=rank == 0)


def save_checkpoint(path, ckpt):
    """Atomic and durable: written to a temporary file, fsynced, then renamed over the old one (and the
    directory fsynced), so a crash or power cut at any moment leaves one whole checkpoint."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state(data_rng, rt):
    """Everything random a resumed run continues from, for every rank: the stage's data-order
    generator (a random.Random: its position in the data), Python's and torch's CPU and CUDA generators
    (sampling, dropout). Call it on every rank (under DDP it gathers the ranks' states to each)."""
    state = dict(data=data_rng.getstate(), python=random.getstate(), torch=torch.get_rng_state(),
                 cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
    if not rt.ddp:
        return [state]
    states = [None] * rt.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def restore_rng(states, data_rng, rt):
    """Put every generator back where rng_state found it, so a resumed run is bitwise the run that was
    interrupted. A checkpoint from another number of processes restores rank 0's data order only."""
    if states is None:  # a checkpoint from before the random state was saved
        if rt.master:
            print("note: this checkpoint holds no random state: the resumed run continues, but not exactly")
        return
    if len(states) != rt.world_size and rt.master:
        print(f"note: the checkpoint's random state is from {len(states)} processes, this run has "
              f"{rt.world_size}: the data order continues, sampling does not repeat exactly")
    own = states[rt.rank] if len(states) == rt.world_size else states[0]
    data_rng.setstate(own["data"])
    if len(states) == rt.world_size:
        random.setstate(own["python"])
        torch.set_rng_state(own["torch"])
        if own["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(own["cuda"])


def load_checkpoint(path):
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if not os.path.exists(path):
        raise MissingFile(f"{path}: no checkpoint here. Run the stage that writes it first "
                                f"(e.g. python sft.py), or point --init_from / the path option at one.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint ({e})") from None


def load_model(init_from, scalar_head=False, model_args=None, vocab=None):
    """Build a model from 'scratch' (model_args), a GPT-2 name, a Hugging Face GPT-2 directory, or one
    of our checkpoints (file or its out_dir). Returns (model, vocab, ckpt or None).
    A checkpoint loaded with the other kind of head keeps the body: an SFT model becomes the start of a
    reward model or critic (new scalar head), a reward model a critic."""
    if init_from == "scratch":
        return GPT(GPTConfig(**{**model_args, "scalar_head": scalar_head})), vocab, None
    if init_from in GPT2_SIZES or (os.path.isdir(init_from) and not os.path.exists(os.path.join(init_from, "ckpt.pt"))):
        return GPT.from_pretrained(init_from, scalar_head=scalar_head), None, None
    ckpt = load_checkpoint(init_from)
    model = GPT(GPTConfig(**{**ckpt["model_args"], "scalar_head": scalar_head}))
    sd = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in ckpt["model"].items()}
    if not scalar_head:
        sd.pop("score_head.weight", None), sd.pop("score_head.bias", None)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if not k.startswith("score_head.")]:
        raise UserError(f"{init_from}: checkpoint does not match the model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model, ckpt.get("vocab"), ckpt


def check_vocab(a, b, what):
    """Two models that exchange token ids must share the vocabulary."""
    if (a is None) != (b is None) or (a is not None and list(a) != list(b)):
        raise UserError(f"{what}: vocabularies differ ({'full GPT-2' if a is None else f'{len(a)} tokens'} vs "
                         f"{'full GPT-2' if b is None else f'{len(b)} tokens'}); train both from the same SFT run")


def disable_dropout(model):
    """Set every dropout probability of `model` to 0 (its config too, so its checkpoint says so), as TRL's
    disable_dropout. RL stages and DPO compare log-probs of two forwards (rollout vs update, policy vs
    reference): with dropout on in training mode they differ, and the first ratio is not 1. Returns the
    dropout the model had."""
    was = model.config.dropout
    model.config.dropout = 0.0
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(m, CausalSelfAttention):
            m.dropout = 0.0
    return was


def configure_optimizer(model, lr, weight_decay=0.0, betas=(0.9, 0.95), device_type="cpu"):
    """AdamW; weight decay on matrices only (not biases, LayerNorms); fused kernel on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=weight_decay),
              dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")


def cosine_lr(it, lr, warmup_iters, max_iters, min_lr_ratio=0.1):
    """Linear warmup, then cosine decay to min_lr_ratio * lr at max_iters."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    frac = min(1.0, (it - warmup_iters) / max(1, max_iters - warmup_iters))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


def log_metrics(path, metrics, master=True):
    """Print one compact line and append the same numbers as one JSON object to `path`."""
    if not master:
        return
    metrics = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()}
    print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()), flush=True)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **metrics}) + "\n")


def model_args_of(model):
    return {k: v for k, v in asdict(model.config).items() if k != "scalar_head"}
