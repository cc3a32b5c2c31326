"""
common.py (goldRLHF): what every stage's runtime shares, and nothing of any stage's algorithm.

- setup: device, autocast dtype, seed, DDP under torchrun, the out_dir and its metrics.jsonl
- load_model / load_frozen / load_reward_model: a GPT from scratch, GPT-2 weights or one of our
  checkpoints; a frozen copy (reference, reward model) checked against the policy's vocabulary
- configure_optimizer, cosine_lr, wrap (torch.compile, then DDP)
- the checkpoint, one dict for every stage: save (atomic, with every rank's random state), resume
  (optimizer, iteration, data order and sampling exactly where the run stopped), eval_due and
  evaluate_and_save (the loop's eval -> save step)
- optimizer_step: clip, step, zero the gradients
- log_metrics: one compact printed line and one JSON line per call
"""
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict
from types import SimpleNamespace

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import MissingFile, UserError
from model import GPT, GPT2_SIZES, GPTConfig, RewardEnsemble, disable_dropout, score_sequences


def setup(device="auto", dtype="auto", seed=1337, out_dir=None):
    """Device, autocast context and DDP (under torchrun); creates out_dir (rank 0). Returns a namespace
    the stages read: device, device_type, dtype, ctx, ddp, rank, world_size, master, metrics_path."""
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
    if out_dir and rank == 0:
        os.makedirs(out_dir, exist_ok=True)
    return SimpleNamespace(device=device, device_type=device_type, dtype=dtype, ctx=ctx, ddp=ddp, rank=rank,
                           world_size=world, master=rank == 0,
                           metrics_path=os.path.join(out_dir, "metrics.jsonl") if out_dir else None)


def finish(rt):
    """The end of a stage under DDP: every rank waits until all are done (rank 0 writes the last
    checkpoint after the others' last collective), then all tear the process group down together. Without
    the barrier, rank 1 sometimes aborted at exit after a complete run ("terminate called without an active
    exception", exit -6): its core dump shows a gloo worker thread being unwound while Python finalised
    (the process group lives on in DDP's reducer), which std::terminate()s. Measured on 2 busy cores,
    torch 2.13.0, the 200-iteration DDP SFT run of tests/test_resume: 2 aborts in 80 runs without the
    barrier, 0 in 60 with it (2026-12-03)."""
    if rt.ddp:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- models
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


def widen(model, vocab, new_vocab, block_size):
    """`model` (compact vocabulary `vocab`) as a model over `new_vocab`, a superset, with a context of
    block_size (if larger than its own): every token and position it knows keeps its embedding, every
    weight of its blocks is kept, new tokens and positions start as a fresh model's (normal, std 0.02).
    sft.py --compact_vocab on a checkpoint: e.g. rlaif.py's judge starting from the SFT model."""
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
    """A model that is only read (the reference, a reward model): on `device`, eval mode, no gradients,
    dropout 0, and (same_vocab) the policy's vocabulary `vocab`. Returns (model, its vocab, checkpoint)."""
    m, m_vocab, ckpt = load_model(path, scalar_head=scalar_head)
    if same_vocab:
        check_vocab(vocab, m_vocab, f"policy vs {what} {path}")
    disable_dropout(m)
    return m.to(device).eval().requires_grad_(False), m_vocab, ckpt


def load_reward_model(path, vocab, device, same_vocab=True, objective="mean", coef=1.0):
    """A finished reward model (reward.py's last checkpoint): (model, vocab, gain, bias), its score
    normalised as gain * raw + bias (mean 0, std 1 on SFT samples). A checkpoint without the gain (an
    intermediate one) is refused. same_vocab=False: a reward model with its own tokenizer (it then
    scores re-encoded text). An ensemble checkpoint (reward.py --ensemble=K) comes back as one
    RewardEnsemble whose scores are already normalised and combined by `objective` ('mean', 'worst',
    'uncertainty' = mean - coef * std), with gain 1, bias 0."""
    rm, rm_vocab, ckpt = load_frozen(path, vocab, "reward model", device, True, same_vocab)
    if "reward_gain" not in (ckpt or {}):
        raise UserError(f"{path}: no reward_gain/reward_bias in the checkpoint (not a finished reward.py run)",
                        fix="train it to the end with reward.py")
    if coef < 0:
        raise UserError(f"--uncertainty_coef={coef}: must be >= 0 (a negative one would pay for disagreement)")
    members = ckpt.get("members") or []
    if objective != "mean" and not members:
        raise UserError(f"{path}: --reward_ensemble={objective} needs an ensemble of K >= 2 reward models; "
                        f"this checkpoint holds one", fix="train one with reward.py --ensemble=4, or use "
                        "--reward_ensemble=mean")
    if not members:
        return rm, rm_vocab, ckpt["reward_gain"], ckpt["reward_bias"]
    models = [rm]
    for mem in members:
        m = GPT(GPTConfig(**{**ckpt["model_args"], "scalar_head": True}))
        m.load_state_dict(mem["model"])
        disable_dropout(m)
        models.append(m.to(device).eval().requires_grad_(False))
    gains = [ckpt["reward_gain"]] + [mem["reward_gain"] for mem in members]
    biases = [ckpt["reward_bias"]] + [mem["reward_bias"] for mem in members]
    return RewardEnsemble(models, gains, biases, objective, coef).to(device), rm_vocab, 1.0, 0.0


def load_reward_models(paths, aspect_weights, vocab, device, same_vocab=True, objective="mean", coef=1.0):
    """The reward of ppo.py and grpo.py: one reward model, or one per aspect (reward.py --label_kind=aspects
    --aspect=NAME) whose normalised scores are summed with weights; each may be an ensemble, combined by
    `objective` and `coef` (load_reward_model). paths: checkpoints, comma-separated;
    aspect_weights: '' (each model weight 1), 'name:w,...' (by each model's aspect; every model named) or
    'w,...' (in the order of paths). Returns [(model, vocab, gain, bias, weight, aspect or None)]."""
    names = [p.strip() for p in paths.split(",") if p.strip()]
    rms = [(*load_reward_model(p, vocab, device, same_vocab, objective, coef), load_checkpoint(p).get("aspect") or None)
           for p in names]
    entries = [e.strip() for e in aspect_weights.split(",") if e.strip()]
    if not entries:
        weights = [1.0] * len(rms)
    elif all(":" in e for e in entries):  # by aspect name
        by_name = {}
        for e in entries:
            k, _, w = e.partition(":")
            by_name[k.strip()] = _weight(w, e)
        have = [a for *_, a in rms]
        for k in by_name:
            if k not in have:
                raise UserError(f"--aspect_weights: aspect {k!r} is not in the reward models (they rate "
                                f"{', '.join(str(a) for a in have)})", fix="name their aspects, or pass --reward_path=...")
        missing = [p for p, a in zip(names, have) if a not in by_name]
        if missing:
            raise UserError(f"--aspect_weights={aspect_weights!r} gives no weight to {missing[0]} (aspect "
                            f"{have[names.index(missing[0])]!r})", fix="give every reward model a weight (0 to drop it)")
        weights = [by_name[a] for a in have]
    else:
        weights = [_weight(e, e) for e in entries]
        if len(weights) != len(rms):
            raise UserError(f"--aspect_weights has {len(weights)} weights for {len(rms)} reward models",
                            fix="one weight per --reward_path entry, in order (or name:weight by aspect)")
    return [(m, v, g, b, w, a) for (m, v, g, b, a), w in zip(rms, weights)]


@torch.no_grad()
def ensemble_stats(rms, seqs, pad_id):
    """What an ensemble reward says beside its objective, on token-id lists seqs (the policy's samples,
    prompt + response; load_reward_models' rms, same vocabulary): `ensemble_std`, the std over members of
    their normalised scores (mean over samples; several reward models: the |weight|-weighted sum), which
    should rise as the policy leaves the labelled distribution; `reward_mean`, the reward with the members'
    mean as the objective (what 'worst' / 'uncertainty' would have been paid without the penalty).
    {} when no reward model is an ensemble."""
    if not any(isinstance(m, RewardEnsemble) for m, *_ in rms):
        return {}
    std = sum(abs(w) * score_sequences(m, seqs, pad_id, forward=m.spread)
              for m, _, _, _, w, _ in rms if isinstance(m, RewardEnsemble))
    mean = sum(w * (score_sequences(m, seqs, pad_id, forward=m.mean_score) if isinstance(m, RewardEnsemble)
                    else score_sequences(m, seqs, pad_id, g, b)) for m, _, g, b, w, _ in rms)
    return {"ensemble_std": std.mean().item(), "reward_mean": mean.mean().item()}


def _weight(text, entry):
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--aspect_weights: {entry!r}: the weight is not a number") from None


# ----------------------------------------------------------------------------- optimisation
def configure_optimizer(model, lr, weight_decay=0.0, device_type="cpu", betas=(0.9, 0.95)):
    """AdamW; weight decay on matrices only (not biases, LayerNorms); the fused kernel (one pass over all
    parameters) on CUDA and on the CPU too: at GPT-2 124M on one CPU thread the default for-loop step took
    0.50 s, the fused one 0.08 s (2026-12-02). device_type is kept for callers; fused runs on both."""
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
    """Clip the global gradient norm of `model` (0: off), step, and clear the gradients."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def wrap(model, rt, compile=False):
    """The model the training step calls: torch.compile'd (optional), then DDP under torchrun. Evaluation
    and checkpoints use the unwrapped model (rank 0 alone: a DDP forward would wait for the other ranks)."""
    if compile:
        model = torch.compile(model)
    if rt.ddp:
        model = DDP(model, device_ids=[int(rt.device.split(":")[1])] if rt.device_type == "cuda" else None)
    return model


# ----------------------------------------------------------------------------- checkpoints
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


def model_args_of(model):
    return {k: v for k, v in asdict(model.config).items() if k != "scalar_head"}


def save(out_dir, rt, iter_num, config, vocab, data_rng, model, optimizer, rng_states=None, **extra):
    """The checkpoint every stage writes to out_dir/ckpt.pt: model (state_dict), model_args, optimizer,
    iter_num, config, vocab, rng (every rank's random state, gathered now unless given as rng_states),
    plus the stage's `extra` entries. Call it on every rank; rank 0 writes. Nothing is written at
    iteration 0."""
    states = rng_states or rng_state(data_rng, rt)
    if iter_num > 0 and rt.master:
        save_checkpoint(os.path.join(out_dir, "ckpt.pt"), dict(
            model=model.state_dict(), model_args=model_args_of(model), optimizer=optimizer.state_dict(),
            iter_num=iter_num, config=config, vocab=vocab, rng=states, **extra))


def evaluate_and_save(evaluate, out_dir, rt, iter_num, config, vocab, data_rng, model, optimizer, **extra):
    """Rank 0 runs evaluate() and logs what it returns (one line, one JSON object; nothing if it returns
    None), then every rank takes part in saving the checkpoint (`save`)."""
    if rt.master and (metrics := evaluate()) is not None:
        log_metrics(rt.metrics_path, {"iter": iter_num, **metrics})
    save(out_dir, rt, iter_num, config, vocab, data_rng, model, optimizer, **extra)


def resume(ckpt, rt, seed, optimizer):
    """The data-order generator and the iteration to start from. A fresh run (ckpt None): Random(seed)
    (the same on every rank: each draws the global batch and keeps its share) and 0. A resumed run: the
    optimizer, the iteration, the data order and every generator restored from the checkpoint, so it
    continues bitwise as the interrupted run would have."""
    rng = random.Random(seed)
    if ckpt is None:
        return rng, 0
    optimizer.load_state_dict(ckpt["optimizer"])
    restore_rng(ckpt.get("rng"), rng, rt)
    return rng, ckpt["iter_num"]


def eval_due(iter_num, eval_interval, max_iters, resumed_at=None):
    """Evaluate (and save) every eval_interval iterations and at the end, except at the iteration a run
    resumed from: its checkpoint was evaluated and saved already."""
    return (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num != resumed_at


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


# ----------------------------------------------------------------------------- logging
def log_metrics(path, metrics, master=True):
    """Print one compact line and append the same numbers as one JSON object to `path`."""
    if not master:
        return
    metrics = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()}
    print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()), flush=True)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **metrics}) + "\n")
