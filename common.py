"""
common.py (goldRLHF): the runtime every stage shares, none of any stage's algorithm: setup (device, autocast,
seed, DDP under torchrun, the out_dir a run may write: claim_out_dir), loading models (GPT-2 weights, our
checkpoints, frozen copies; reward models are in rewards.py), the optimizer, masked_whiten, the one
checkpoint every stage saves and resumes from, log_metrics.
"""
import copy
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from types import SimpleNamespace

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import task
from configurator import MissingFile, UserError
from model import GPT, GPT2_SIZES, GPTConfig, disable_dropout, response_logprobs


RUN_OUTPUTS = ("ckpt.pt", "metrics.jsonl")  # what a training stage writes into its out_dir


def setup(device="auto", dtype="auto", seed=1337, out_dir=None, config=None, inputs=(), outputs=RUN_OUTPUTS):
    """Device, autocast ctx, seed, DDP under torchrun, out_dir: the namespace every stage reads. With the
    run's config, first claim_out_dir(out_dir, config, inputs, outputs): before any work."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world = 0, 0, 1
    if out_dir and config is not None:
        claim_out_dir(out_dir, config, inputs, outputs, master=int(os.environ.get("RANK", 0)) == 0)
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
    if out_dir and rank == 0:
        os.makedirs(out_dir, exist_ok=True)
    return SimpleNamespace(device=device, device_type=device_type, dtype=dtype, ctx=ctx, ddp=ddp, rank=rank,
                           world_size=world, master=rank == 0,
                           metrics_path=os.path.join(out_dir, "metrics.jsonl") if out_dir else None)


def claim_out_dir(out_dir, config, inputs=(), outputs=RUN_OUTPUTS, master=True):
    """The one rule: a run never replaces what it did not make. A fresh run into an out_dir holding any of
    `outputs` is refused unless config's overwrite (then they are removed: the run starts anew); an out_dir
    that is the folder of an input (the config keys `inputs` name: a checkpoint x/ckpt.pt is folder x, a
    data file counts if an output would replace it) always. --init_from=resume: the checkpoint must be
    there, architecture keys (its model_args) must not change, other changes are printed, and metrics.jsonl
    is cut back to the checkpoint's iteration (what the resumed run logs again). One line, exit 2."""
    here, resume = os.path.realpath(out_dir), config.get("init_from") == "resume"
    replaced = {os.path.realpath(os.path.join(out_dir, o)) for o in outputs}
    for key in inputs:
        for path in str(config.get(key) or "").split(","):
            if path in ("", "scratch", "sft", "resume", "builtin") or path in GPT2_SIZES:
                continue
            real = os.path.realpath(path)
            folder = os.path.dirname(real) if real.endswith(".pt") else real
            if folder == here or real in replaced:
                raise UserError(f"--out_dir={out_dir} is where --{key}={path}, an input of this run, lives: the "
                                f"run would replace it (even with --overwrite=True)", fix="choose another --out_dir")
    can_resume = "ckpt.pt" in outputs
    if not resume:
        there = [o for o in outputs if os.path.exists(os.path.join(out_dir, o))]
        if there and not config.get("overwrite"):
            raise UserError(f"{out_dir} holds {', '.join(there)} from an earlier run, which this fresh run would "
                            "replace",
                            fix=("pass --init_from=resume to continue it, " if can_resume else "pass ") +
                            "--overwrite=True to start anew (it removes them), or another --out_dir")
        for o in there if master else []:
            os.remove(os.path.join(out_dir, o))
        return
    path = os.path.join(out_dir, "ckpt.pt")
    if not os.path.exists(path):
        raise UserError(f"--init_from=resume: no checkpoint in {out_dir} (ckpt.pt) to resume from",
                        fix="start a fresh run without --init_from=resume")
    ckpt = load_checkpoint(path, mmap=True)  # (mmap: the config and iteration without reading the weights)
    old, arch = ckpt.get("config") or {}, ckpt.get("model_args") or {}
    changed = [k for k in config if k in old and config[k] != old[k] and k not in ("init_from", "overwrite")]
    for k in [k for k in changed if k in arch]:
        raise UserError(f"--{k}={config[k]!r} on resume: the checkpoint in {out_dir} has {k}={old[k]!r} (the model "
                        f"resumes with the checkpoint's architecture)",
                        fix=f"drop --{k}, or start a fresh run with --overwrite=True")
    if master:
        if changed:
            print("resuming with changed keys: " + ", ".join(f"{k} {old[k]} -> {config[k]}" for k in changed))
        cut_metrics(os.path.join(out_dir, "metrics.jsonl"), ckpt["iter_num"])


def cut_metrics(path, iter_num):
    """metrics.jsonl without the rows logged after the checkpoint at iter_num (the resumed run logs those
    iterations again): rows up to the first with a later "iter" (or cut by a kill) are kept."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    keep = 0
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            break
        if not line.endswith("\n") or not isinstance(row, dict) or row.get("iter", -1) > iter_num:
            break
        keep += 1
    if keep < len(lines):
        print(f"note: {path}: {len(lines) - keep} rows after iteration {iter_num} (the checkpoint's) removed; "
              f"the resumed run logs them again")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(lines[:keep])
        os.replace(path + ".tmp", path)


def finish(rt):
    """Under DDP, every rank waits for all, tears the process group down, and leaves without Python's
    finalisation: there the DDP reducer (which keeps the gloo group alive) can be unwound while a gloo
    thread still runs, and `std::terminate` aborts a rank after a complete run (RESULTS.md, "DDP teardown").
    Every file a stage writes is closed by then; only the standard streams need flushing."""
    if rt.ddp:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# ----------------------------------------------------------------------------- models
def load_checkpoint(path, mmap=False):
    """A checkpoint a stage wrote (its ckpt.pt, or the folder holding it); anything else is one line naming it."""
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if not os.path.exists(path):
        raise MissingFile(f"{path}: no checkpoint here. Run the stage that writes it first "
                          f"(e.g. python sft.py), or point --init_from / the path option at one.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # pickle, zip, EOF or OS errors, some of them many lines long: the kind is enough
        raise UserError(f"{path}: not a readable checkpoint ({getattr(e, 'strerror', None) or type(e).__name__})",
                        fix="give the ckpt.pt a stage wrote, or its folder") from None
    if not isinstance(ckpt, dict) or not {"model", "model_args"} <= ckpt.keys():
        raise UserError(f"{path}: not a readable checkpoint (no model / model_args in it)",
                        fix="Hugging Face GPT-2 weights: give their folder, or a .bin / .safetensors file")
    if (version := task.old_version(ckpt.get("vocab"))):
        raise UserError(f"{path}: a model of the built-in task's version {version}, whose prompts this version "
                        f"({task.TASK_VERSION}: notes in, review out) no longer has",
                        fix="train it again on this version: bash demo.sh, or python sft.py and the stages after it")
    return ckpt


def load_model(init_from, scalar_head=False, model_args=None, vocab=None):
    """(model, vocab, ckpt or None) from 'scratch', a GPT-2 name or HF directory, or our checkpoint. Loaded
    with the other kind of head it keeps the body: an SFT model starts a reward model or critic."""
    if init_from == "scratch":
        return GPT(GPTConfig(**{**model_args, "scalar_head": scalar_head})), vocab, None
    hf = os.path.isdir(init_from) and not os.path.exists(os.path.join(init_from, "ckpt.pt")) and \
        any(os.path.exists(os.path.join(init_from, f)) for f in ("model.safetensors", "pytorch_model.bin"))
    if init_from in GPT2_SIZES or hf or init_from.endswith((".bin", ".safetensors")):
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


def widen(model, vocab, new_vocab, block_size):
    """`model` (compact `vocab`) over `new_vocab`, a superset, with context >= block_size: known weights
    kept, new tokens and positions initialised fresh (sft.py --compact_vocab from a checkpoint)."""
    cfg = GPTConfig(**{**model_args_of(model), "vocab_size": len(new_vocab),
                       "block_size": max(block_size, model.config.block_size)})
    new, old = GPT(cfg), model.state_dict()
    at = {g: i for i, g in enumerate(new_vocab)}
    rows = torch.tensor([at[g] for g in vocab])  # (a KeyError here: new_vocab lacks one of the model's tokens)
    with torch.no_grad():
        for k, v in new.state_dict().items():
            if k in ("transformer.wte.weight", "lm_head.weight"):
                v[rows] = old[k]
            elif k == "transformer.wpe.weight":
                v[:old[k].shape[0]] = old[k]
            elif k in old:
                v.copy_(old[k])
    return new


def check_vocab(a, b, what):
    """Two models that exchange token ids must share the vocabulary."""
    if (a is None) != (b is None) or (a is not None and list(a) != list(b)):
        raise UserError(f"{what}: vocabularies differ ({'full GPT-2' if a is None else f'{len(a)} tokens'} vs "
                        f"{'full GPT-2' if b is None else f'{len(b)} tokens'}); train both from the same SFT run")


def load_frozen(path, vocab, what, device, scalar_head=False, same_vocab=True):
    """(model, vocab, ckpt) of a read-only model (reference, reward model): eval, no grad, dropout 0."""
    m, m_vocab, ckpt = load_model(path, scalar_head=scalar_head)
    if same_vocab:
        check_vocab(vocab, m_vocab, f"policy vs {what} {path}")
    disable_dropout(m)
    return m.to(device).eval().requires_grad_(False), m_vocab, ckpt


# ----------------------------------------------------------------------------- optimisation
def configure_optimizer(model, lr, weight_decay=0.0, betas=(0.9, 0.95)):
    """AdamW, weight decay on matrices only, the fused kernel on CUDA and CPU alike (faster: RESULTS.md)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=weight_decay),
              dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)


def cosine_lr(it, lr, warmup_iters, max_iters, min_lr_ratio=0.1):
    """Linear warmup, then cosine decay to min_lr_ratio * lr at max_iters."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    frac = min(1.0, (it - warmup_iters) / max(1, max_iters - warmup_iters))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


def set_lr(optimizer, lr):
    for g in optimizer.param_groups:
        g["lr"] = lr


def optimizer_step(optimizer, model, grad_clip=0.0):
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def wrap(model, rt, compile=False):
    """torch.compile, then DDP; eval and checkpoints use the unwrapped model (a DDP forward on rank 0 hangs)."""
    if compile:
        model = torch.compile(model)
    if rt.ddp:
        model = DDP(model, device_ids=[int(rt.device.split(":")[1])] if rt.device_type == "cuda" else None)
    return model


def mismatch_kl(sampler_logp, trainer_logp, mask):
    """(B, N) log-probs of the sampled tokens from model.generate (KV-cached) and from the update's own
    forward (response_logprobs), mask (B, N) -> KL(sampler || trainer) per sequence, a 0-dim tensor: k3 per
    token, r = p_trainer / p_sampler, summed over the response, mean over responses. 0 in exact arithmetic;
    rounding (bf16, the cache, the fused head) is what it measures (the rollout / trainer mismatch)."""
    d = (trainer_logp.double() - sampler_logp.double()) * mask  # fp64 and expm1: e^d - 1 - d ~ d^2 / 2 >= 0
    return ((torch.expm1(d) - d) * mask).sum(1).mean().float()


def sampler_mismatch(model, gens, temperature=1.0, fused=False):
    """mismatch_kl, mean over responses, of generate()'s outputs `gens` (their sampler log-probs) against `model`."""
    total, n = 0.0, 0
    for g in gens:
        P, mask = g["prompt_len"], g["response_mask"]
        labels = g["tokens"][:, P:].masked_fill(~mask, -100)
        logp, _ = response_logprobs(model, g["tokens"], g["attention_mask"], labels, temperature, fused)
        total, n = total + mismatch_kl(g["logprobs"], logp, mask).item() * len(mask), n + len(mask)
    return total / n


# ----------------------------------------------------------------------------- statistics over every rank's tokens
def masked_whiten(x, mask, shift_mean=True):
    """x (B, N) whitened over the tokens where mask is True, over every rank, as lm-human-preferences and
    TRL; 0 where masked. shift_mean=False keeps the mean (PPO's reward whitening)."""
    mask = mask.float()
    sums = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()]).double()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    mean = sums[0] / sums[2].clamp(min=1)
    var = (sums[1] / sums[2].clamp(min=1) - mean ** 2).clamp(min=0)
    mean, var = mean.to(x.dtype), var.to(x.dtype)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, ckpt):
    """Atomic and durable: a crash or power cut at any moment leaves one whole checkpoint."""
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


def model_args_of(model):
    return {k: v for k, v in asdict(model.config).items() if k != "scalar_head"}


def save(out_dir, rt, iter_num, config, vocab, data_rng, model, optimizer, rng_states=None, **extra):
    """Every stage's out_dir/ckpt.pt, with every rank's random state and the stage's `extra` entries.
    Call it on every rank; rank 0 writes, nothing at iteration 0."""
    ckpt = checkpoint(rt, iter_num, config, vocab, data_rng, model, optimizer, rng_states, **extra)
    if iter_num > 0 and rt.master:
        save_checkpoint(os.path.join(out_dir, "ckpt.pt"), ckpt)


def checkpoint(rt, iter_num, config, vocab, data_rng, model, optimizer, rng_states=None, **extra):
    """The checkpoint dict `save` writes (every rank calls it: the random states are gathered)."""
    return dict(model=model.state_dict(), model_args=model_args_of(model), optimizer=optimizer.state_dict(),
                iter_num=iter_num, config=config, vocab=vocab, rng=rng_states or rng_state(data_rng, rt), **extra)


def to_cpu(x):
    """A copy of x (a tensor, or dicts and lists of them) on the CPU: a state kept aside while training goes on."""
    if torch.is_tensor(x):
        return x.detach().to("cpu", copy=True)
    if isinstance(x, dict):
        return {k: to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_cpu(v) for v in x)
    return copy.deepcopy(x)


def snapshot(*args, **extra):
    """`checkpoint` copied to the CPU now (every rank calls it): --stop_on's way back (monitors.py)."""
    return to_cpu(checkpoint(*args, **extra))


def save_snapshot(out_dir, rt, snap):
    """A snapshot as out_dir/ckpt.pt, atomically (rank 0; nothing at iteration 0: the start is the SFT model)."""
    if snap["iter_num"] > 0 and rt.master:
        save_checkpoint(os.path.join(out_dir, "ckpt.pt"), snap)


def evaluate_and_save(evaluate, out_dir, rt, iter_num, config, vocab, data_rng, model, optimizer, **extra):
    """Rank 0 logs evaluate()'s metrics (unless None), then every rank takes part in `save`."""
    if rt.master and (metrics := evaluate()) is not None:
        log_metrics(rt.metrics_path, {"iter": iter_num, **metrics})
    save(out_dir, rt, iter_num, config, vocab, data_rng, model, optimizer, **extra)


def resume(ckpt, rt, seed, optimizer):
    """(data-order generator, start iteration): Random(seed), the same on every rank, and 0; or restored
    from ckpt with the optimizer and every generator, so the run continues bitwise."""
    rng = random.Random(seed)
    if ckpt is None:
        return rng, 0
    optimizer.load_state_dict(ckpt["optimizer"])
    restore_rng(ckpt.get("rng"), rng, rt)
    return rng, ckpt["iter_num"]


def eval_due(iter_num, eval_interval, max_iters, resumed_at=None):
    """Every eval_interval and at the end, but not where a run resumed (its checkpoint is saved)."""
    return (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num != resumed_at


def rng_state(data_rng, rt):
    """Every rank's data-order, Python, torch and CUDA generator states. Call it on every rank."""
    state = dict(data=data_rng.getstate(), python=random.getstate(), torch=torch.get_rng_state(),
                 cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
    if not rt.ddp:
        return [state]
    states = [None] * rt.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def restore_rng(states, data_rng, rt):
    """Put back what rng_state saved; from another number of processes, rank 0's data order only."""
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


# ----------------------------------------------------------------------------- logging
JSONL_ONLY = ("kl_est/", "cost/")  # too many for the compact line (kl_estimators.py, monitors.py): metrics.jsonl only


def log_metrics(path, metrics, master=True):
    """Print one compact line and append the same numbers (and the JSONL_ONLY ones) as one JSON object to `path`."""
    if not master:
        return
    metrics = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()}
    print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                     if not k.startswith(JSONL_ONLY)), flush=True)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **metrics}) + "\n")
