"""
Throughput of every stage's inner step at GPT-2 124M shapes (random weights: no download needed), and
generation against Hugging Face `generate` on the same weights.

    python bench/stages.py                          # GPU: the table for bench/RESULTS.md
    python bench/stages.py --device=cpu --small     # seconds on CPU: smoke test (tests/test_bench.py)
    python bench/stages.py --steps=sft,dpo --impls=ours   # a subset of the rows

One table, one row per measured step, each timed as the median of --reps after --warmup:
  generate B=...   rollout tokens/s of model.generate (prompt --prompt_len, --new_tokens new tokens, no
                   early stop); 'hf generate' rows when `transformers` is installed (same weights, exported
                   with model.to_hf, sampling with the same settings)
  sft              tokens/s: forward, log-probs, backward, AdamW step (sft.sft_loss)
  reward           pairs/s: chosen and rejected through the scalar head, Bradley-Terry loss, step (reward.bt_loss)
  ppo update       tokens/s: policy kernels.logprobs_entropy + clipped loss, critic clipped value loss,
                   two backward passes and two steps (ppo.policy_loss, ppo.value_loss)
  grpo update      tokens/s: reference forward, policy logprobs + k3 KL + clipped loss (grpo.clipped_policy_loss)
  grpo step        tokens/s: a whole GRPO step, sampling B responses of --new_tokens tokens, then the grpo update
  dpo              pairs/s: chosen and rejected concatenated in one forward, sequence log-probs, sigmoid loss
                   (dpo.dpo_loss; reference log-probs precomputed, as dpo.py's default)
sft, ppo, grpo and dpo run twice: 'ours' (logits, then the kernels.logprobs* kernels) and 'ours fused'
(model.token_logprobs(..., fused=True): kernels.linear_logprobs_entropy from the hidden states, no logits in
memory), the two settings of the stages' --fused_lm_head switch.
TRL rows (bench/trl_rows.py) when `trl` is installed: SFTTrainer, RewardTrainer, DPOTrainer and
GRPOTrainer on the same weights, shapes and batch, timed per optimizer step, each twice: as shipped (TRL's
configs default to gradient checkpointing) and tuned (no gradient checkpointing; on CUDA also Liger kernels
when installed). The 'x TRL' column is our throughput over TRL's *fastest* row for the same step; for the
generate rows, over HF generate's. TRL has no PPO trainer any more.
HF generate runs with the best settings transformers has for the device without compiling: sdpa attention,
KV cache (its default dynamic cache), fp32 on CPU, bf16 weights on CUDA. The 'settings' column says what
each row used. Peak memory is torch.cuda.max_memory_allocated over the row (CUDA only). CPU threads:
torch's default (OMP_NUM_THREADS), printed in the header.
"""
import argparse
import datetime
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernels  # noqa: E402
from dpo import dpo_loss  # noqa: E402
from grpo import aggregate, clipped_policy_loss  # noqa: E402
from common import configure_optimizer  # noqa: E402
from model import GPT, GPTConfig, to_hf, token_logprobs  # noqa: E402
from ppo import policy_loss, value_loss  # noqa: E402
from reward import bt_loss  # noqa: E402
from sft import sft_loss  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--batches", default="1,64,256", help="generation batch sizes")
p.add_argument("--prompt_len", type=int, default=64)
p.add_argument("--new_tokens", type=int, default=128)
p.add_argument("--train_batch", type=int, default=16, help="sequences per training step (pairs for reward/dpo)")
p.add_argument("--seq", type=int, default=512, help="tokens per training sequence")
p.add_argument("--reps", type=int, default=10)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--compile", action="store_true", help="torch.compile the models")
p.add_argument("--small", action="store_true", help="tiny model and sizes for a CPU smoke run")
p.add_argument("--trl", action=argparse.BooleanOptionalAction, default=None,
               help="TRL rows (default: when trl is installed)")
p.add_argument("--steps", default="generate,sft,reward,ppo,grpo_update,grpo_step,dpo",
               help="which rows to measure, comma separated")
p.add_argument("--impls", default="ours,ours fused", help="our rows: 'ours' (logits), 'ours fused' (fused lm_head)")
args = p.parse_args()
cfg = dict(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768)  # GPT-2 124M
if args.small:
    cfg = dict(block_size=64, vocab_size=512, n_layer=2, n_head=2, n_embd=64)
    args.batches, args.prompt_len, args.new_tokens, args.train_batch, args.seq = "1,4", 8, 8, 4, 32
    args.reps, args.warmup = 2, 1
dev = torch.device(args.device)
cuda = dev.type == "cuda"
ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
torch.backends.cuda.matmul.allow_tf32 = True
torch.manual_seed(0)
DT = "bf16 autocast" if cuda else "fp32"


def new_model(scalar_head=False):
    m = GPT(GPTConfig(**cfg, scalar_head=scalar_head)).to(dev)
    return torch.compile(m) if args.compile else m


def timed(step):
    """Median seconds of step() over args.reps (after args.warmup), and the peak memory in GiB."""
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), (torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"))


rows = []
steps = args.steps.split(",")


def add(*new):
    """Record rows, and print each as it comes (a long CPU run leaves its partial results behind)."""
    for r in new:
        rows.append(r)
        print(f"progress: {r[0]} | {r[1]} | {r[-1]} | {r[3]:.4g} {r[4]} | {1000 * r[2]:.0f} ms/step", flush=True)


use_trl = args.trl if args.trl is not None else importlib.util.find_spec("trl") is not None


def trl_step(step):
    """TRL's rows for `step`, run right after ours: the two share the machine's state of the moment (on a
    shared, noisy machine the ratio is steadier than with all of TRL's rows at the end)."""
    if use_trl and step.replace(" ", "_") in steps:
        from trl_rows import trl_rows
        add(*trl_rows(raw, cfg, B, T, P, N, args.reps, args.warmup, dev, only=(step,)))
        raw.train()


V, B, T = cfg["vocab_size"], args.train_batch, args.seq
P, N = args.prompt_len, args.new_tokens  # PPO / GRPO: prompt_len + new_tokens per sequence
tokens = lambda b, t: torch.randint(0, V - 1, (b, t), device=dev)

# ----------------------------------------------------------------------------- generation
policy = new_model().eval()
raw = getattr(policy, "_orig_mod", policy)
hf = None
try:
    from transformers import GPT2LMHeadModel
    with tempfile.TemporaryDirectory() as d:
        to_hf(raw, d)
        hf = GPT2LMHeadModel.from_pretrained(d, torch_dtype=torch.bfloat16 if cuda else torch.float32,
                                             attn_implementation="sdpa").to(dev).eval()
except ImportError:
    pass
for b in [int(x) for x in args.batches.split(",")] if "generate" in steps else []:
    prompts = tokens(b, args.prompt_len)
    with ctx:  # eot=-1 never comes up: every row generates new_tokens tokens
        s, mem = timed(lambda: raw.generate(prompts.tolist(), args.new_tokens, eot=-1))
    add((f"generate B={b}", "ours", s, b * args.new_tokens / s, "tok/s", mem, f"KV cache, sdpa, {DT}"))
    if hf is not None:
        with torch.no_grad():
            s, mem = timed(lambda: hf.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                                               top_k=0, max_new_tokens=args.new_tokens,
                                               min_new_tokens=args.new_tokens, pad_token_id=50256))
        add((f"generate B={b}", "hf generate", s, b * args.new_tokens / s, "tok/s", mem,
                     f"sdpa, dynamic KV cache, {'bf16 weights' if cuda else 'fp32'}"))
del hf

# ----------------------------------------------------------------------------- training steps
policy.train()
opt = configure_optimizer(raw, 1e-5)


def step_sft(fused=False):
    x, y = tokens(B, T), tokens(B, T)
    with ctx:
        loss = sft_loss(token_logprobs(policy, x, y, fused=fused, entropy=False)[0], y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


# every log-prob step twice: logits + kernels.logprobs*, and fused_lm_head=True (the stages' switch)
IMPLS = [(impl, fused) for impl, fused in (("ours", False), ("ours fused", True)) if impl in args.impls.split(",")]
SET = {False: f"logits + kernels, {DT}", True: f"fused lm_head, {DT}"}
for impl, fused in IMPLS if "sft" in steps else []:
    s, mem = timed(lambda: step_sft(fused))
    add(("sft", impl, s, B * T / s, "tok/s", mem, SET[fused]))
trl_step("sft")

rm = new_model(scalar_head=True)
rm_opt = configure_optimizer(getattr(rm, "_orig_mod", rm), 1e-5)


def step_reward():
    x = tokens(2 * B, T)
    with ctx:
        r = rm(x)[:, -1].float()
        loss = bt_loss(r[:B], r[B:])
    loss.backward()
    rm_opt.step()
    rm_opt.zero_grad(set_to_none=True)


if "reward" in steps:
    s, mem = timed(step_reward)
    add(("reward", "ours", s, B / s, "pairs/s", mem, DT))
    trl_step("reward")

critic = rm  # the loss on the response tokens
mask = torch.ones(B, N, dtype=torch.bool, device=dev)
ref = new_model().eval()


def step_ppo(fused=False):
    x = tokens(B, P + N)
    old_logp, adv = -torch.rand(B, N, device=dev), torch.randn(B, N, device=dev)
    old_v, ret = torch.randn(B, N, device=dev), torch.randn(B, N, device=dev)
    with ctx:
        logp, ent = token_logprobs(policy, x[:, :-1], x[:, P:], fused=fused)
        loss, _, _ = policy_loss(logp, old_logp, adv, mask, 0.2)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with ctx:
        vloss = value_loss(critic(x)[:, P - 1:-1].float(), old_v, ret, mask, 0.2)
    vloss.backward()
    rm_opt.step()
    rm_opt.zero_grad(set_to_none=True)


for impl, fused in IMPLS if "ppo" in steps else []:
    s, mem = timed(lambda: step_ppo(fused))
    add(("ppo update", impl, s, B * N / s, "tok/s", mem, SET[fused]))


def step_grpo(fused=False):
    x = tokens(B, P + N)
    old_logp, adv = -torch.rand(B, N, device=dev), torch.randn(B, device=dev)
    with ctx:
        with torch.no_grad():
            ref_logp = kernels.logprobs(ref(x)[:, P - 1:-1], x[:, P:])
        logp, _ = token_logprobs(policy, x[:, :-1], x[:, P:], fused=fused)
        per_token, _, _ = clipped_policy_loss(logp, old_logp, adv)
        loss = aggregate(per_token + 0.04 * kernels.kl_estimate(logp, ref_logp, "k3"), mask)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


for impl, fused in IMPLS if "grpo_update" in steps else []:
    s, mem = timed(lambda: step_grpo(fused))
    add(("grpo update", impl, s, B * N / s, "tok/s", mem, SET[fused]))

rollout_prompts = tokens(B, P).tolist()


def step_grpo_whole(fused=False):
    policy.eval()
    with ctx:
        raw.generate(rollout_prompts, N, eot=-1)
    policy.train()
    step_grpo(fused)


for impl, fused in IMPLS if "grpo_step" in steps else []:
    s, mem = timed(lambda: step_grpo_whole(fused))
    add(("grpo step", impl, s, B * N / s, "tok/s", mem, SET[fused]))
trl_step("grpo step")


def step_dpo(fused=False):
    x, y = tokens(2 * B, T), tokens(2 * B, T)
    ref_c, ref_r = -torch.rand(B, device=dev) * T, -torch.rand(B, device=dev) * T
    lens = torch.full((B,), T, device=dev)
    with ctx:
        logps = token_logprobs(policy, x, y, fused=fused, entropy=False)[0].sum(-1)
        losses, _, _ = dpo_loss(logps[:B], logps[B:], ref_c, ref_r, lens, lens)
    losses.mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


for impl, fused in IMPLS if "dpo" in steps else []:
    s, mem = timed(lambda: step_dpo(fused))
    add(("dpo", impl, s, B / s, "pairs/s", mem, SET[fused]))
trl_step("dpo")

# ----------------------------------------------------------------------------- versions
versions = ""
if use_trl:
    import trl
    import transformers
    versions = f" | trl {trl.__version__} | transformers {transformers.__version__}"

# ----------------------------------------------------------------------------- the table
name = torch.cuda.get_device_name(dev) if cuda else "cpu"
threads = "" if cuda else f" | {torch.get_num_threads()} CPU threads"
print(f"# {name} | torch {torch.__version__}{versions} | {datetime.date.today()}{threads} | model {cfg} | "
      f"train batch {B} x {T} | rollout {P}+{N} | compile {args.compile}")
# the baseline of a step: TRL's fastest row (as shipped or tuned); for generation, HF generate
best = {}
for step, impl, _, thr, *_ in rows:
    if impl.startswith("TRL") or impl == "hf generate":
        best[step] = max(best.get(step, 0.0), thr)
print(f"{'step':<16}{'impl':<20}{'ms/step':>10}{'throughput':>14}  {'unit':<8}{'peak GiB':>9}{'x TRL':>7}  settings")
for step, impl, s, thr, unit, mem, settings in rows:
    vs = f"{thr / best[step]:>7.2f}" if step in best and impl.startswith("ours") else f"{'':>7}"
    print(f"{step:<16}{impl:<20}{1000 * s:>10.2f}{thr:>14.1f}  {unit:<8}{mem:>9.2f}{vs}  {settings}")
