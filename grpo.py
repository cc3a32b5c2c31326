"""
grpo.py (goldRLHF): Group Relative Policy Optimization with pluggable reward functions.

For each prompt, sample a group of G responses, score them, and push up the log-probability of the
responses that beat their group: the group itself is the baseline, so no value model is trained
(GRPO, Shao et al. 2024, "DeepSeekMath"; DeepSeek-AI 2025, "DeepSeek-R1"). The update is PPO's
clipped surrogate (Schulman et al. 2017) with a k3 KL penalty to the frozen SFT model in the loss.

    python grpo.py                                          # built-in task, gold ("verifiable") reward
    python grpo.py --rewards=rm                             # the trained reward model (python reward.py)
    python grpo.py --rewards="gold:1.0,length:0.1"          # weighted sum of several rewards
    python grpo.py --rewards="my_reward.py:score:1.0"       # your own function, in your own file
    python grpo.py --advantage=drgrpo --loss_agg=fixed      # Dr. GRPO
    python grpo.py --clip_high=0.28 --loss_agg=token        # DAPO's clip-higher and token-level loss
    torchrun --nproc_per_node=2 grpo.py                     # DDP

Reward functions. A reward is a plain Python function `fn(prompts, responses) -> list[float]`, one
number per response; responses are the decoded texts and end with "<|endoftext|>" when the model
stopped. --rewards is a comma-separated list of `name[:weight]` or `file.py:function[:weight]`; the
reward of a response is the weighted sum. Built in: gold (data.gold: the task's verifiable reward),
rm (the reward model from --reward_path, normalised by the gain/bias stored with it), format (1 if
the response is grammatical and ended, else 0) and length (words / 10: a positive weight favours long
answers, a negative one short answers). A file is imported as is, so your function needs no change
to the project:

    # my_reward.py
    def score(prompts, responses):
        return [1.0 if "great" in r else 0.0 for r in responses]

Advantages (--advantage), for rewards r_1..r_G of one group:
    grpo    (r_i - mean) / (std + eps)        GRPO (Shao et al. 2024)
    drgrpo  r_i - mean                        Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like
                                              Training"): dividing by the std up-weights groups that are
                                              almost all right or all wrong (question-difficulty bias)
    rloo    r_i - mean of the other G-1       RLOO (Ahmadian et al. 2024, "Back to Basics"; Kool et al.
                                              2019): an unbiased baseline, = G/(G-1) (r_i - mean)
    batch_centred  (r_i - group mean) / std of the batch's group-centred rewards: group baseline,
                   batch-level scale, as REINFORCE++-baseline (Hu et al. 2025, "REINFORCE++"), here
                   over responses
    batch_raw      (r_i - group mean) / std of the batch's raw rewards: TRL's scale_rewards="batch"
                   (its eps is 1e-4, ours 1e-6); Liu et al. 2025 ("Tricks or Traps", Lite PPO) argue
                   for a group mean with a batch std
The batch std is over every rank's responses under DDP (all-reduced), as one process would compute it.
Advantages are computed in fp64, and a group whose rewards are all equal (sample std < ZERO_STD = 1e-6)
gets exactly 0 in every mode: no signal, logged as zero_std_frac. (In fp32, eight rewards of 0.1 have
a group mean that is not 0.1, and (r - mean) / (std + eps) turns that rounding into advantages of
-0.007, and of +0.03 for 1/3: every token of the group pushed in a direction set by rounding.)

Loss aggregation (--loss_agg), how per-token losses become one number:
    seq     mean over each response's tokens, then over responses (GRPO): a token of a long response
            weighs less, so long wrong answers are penalised less per token -> length drift
    token   mean over all tokens of the batch (DAPO, Yu et al. 2025): every token weighs the same;
            under DDP over every rank's tokens (the count is all-reduced), not per process
    fixed   sum over tokens / (responses * max_new_tokens) (Dr. GRPO): a constant normaliser, unbiased
Clipping: the ratio is clipped to [1 - clip_low, 1 + clip_high]; clip_high > clip_low is DAPO's
"clip-higher", which lets low-probability tokens grow and keeps entropy from collapsing.

KL to the reference (--kl_estimator), in the loss as in GRPO (not in the reward as in PPO-RLHF):
    k3      r - 1 - log r at the sampled token, r = p_ref / p (GRPO, Shao et al. 2024). Its value is an
            unbiased estimate of KL(p || p_ref), but its gradient, (1 - r) grad log p, is in expectation
            the gradient of the other direction, KL(p_ref || p) (Tang & Munos 2025, "On a few pitfalls in
            KL divergence gradient estimation for RL"); near p_ref the two agree to first order
    full    the exact KL(p || p_ref) over the whole vocabulary at every response position: the true
            gradient of the per-token KL, no sampling noise. Keeps the reference's hidden states of the
            batch (B x N x C) and applies its lm_head in every minibatch; with --fused_lm_head neither
            model's logits are ever held (kernels.linear_kl)
Both are per-token: the KL's effect on which later states are visited is left out, as in GRPO's own
formulation (Tang & Munos 2025 derive the missing term).

The rest of the family, each a flag and a pure function in grpo_variants.py (sources in its docstrings):
    --objective=gspo        GSPO (Zheng et al. 2025): one length-normalised ratio per response, clipped
                            per response (the paper's band is 1 - 3e-4 .. 1 + 4e-4)
    --objective=cispo       CISPO (MiniMax-M1, 2025): REINFORCE times a clipped, stop-gradient IS weight;
                            no token's gradient is dropped (use e.g. --clip_low=1 --clip_high=4)
    --advantage=reinforce, reinforce_baseline   REINFORCE++ (Hu 2025; OpenRLHF's names): whitened over
                            the global batch's tokens, without / with the group mean subtracted first
                            ('batch_centred' above: group-centred, scaled by the batch std of responses, not tokens)
    --kl_in=reward          k1 per token in the reward, summed to the end (PPO-RLHF, REINFORCE++); no KL loss
    --kl_estimator=k3+      k3's value with k2's gradient (verl), the true gradient of KL(p || p_ref)
    --kl_estimator=k3_corrected   k3 x pi / pi_old, unbiased at the current policy (DeepSeek-V3.2, TRL)
    --dynamic_sampling      DAPO: drop groups whose rewards are all equal, sample more (<= max_gen_batches)
    --overlong_cache=L      DAPO's soft overlong punishment, 0 to -overlong_penalty over the last L tokens

Departures from the papers: one small model and rewards on text; the KL term has its own coefficient
and kl_coef=0 skips the reference model entirely (then no held-out KL is reported). Every log-prob a
ratio or KL compares (old, reference, new) comes from one call, response_logprobs: the same forward,
the same fused / unfused lm_head, the same dtype, so under bf16 and --fused_lm_head the first ratio is
exactly 1 and the first k3 exactly 0 (old log-probs from the sampler, or from bf16 logits against fused
fp32 ones, differ by rounding: mean |d logp| ~0.01 here, ~0.1 at GPT-2's logit scale, enough to clip).
Dropout is forced to 0 (as TRL's disable_dropout): with it the first ratio would not be 1 either.
Writes out_dir/ckpt.pt (a plain LM: sample.py reads it) and out_dir/metrics.jsonl.
"""
import importlib.util
import math
import os
import random
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import data
import grpo_variants as gv
import kernels
from configurator import MissingFile, UserError, configure
from model import (check_vocab, configure_optimizer, cosine_lr, disable_dropout, gather_last, load_model,
                   log_metrics, model_args_of, restore_rng, rng_state, save_checkpoint, setup)

# ----------------------------------------------------------------------------- config
out_dir = "out/grpo"  # checkpoint, metrics.jsonl go here
init_from = "sft"  # 'sft' (policy starts from sft_path) or 'resume' (continue from out_dir/ckpt.pt)
sft_path = "out/sft/ckpt.pt"  # SFT checkpoint: the policy's start and the frozen reference (unused if kl_coef=0)
reward_path = "out/reward/ckpt.pt"  # reward model checkpoint (reward.py), used by the 'rm' reward
rewards = "gold"  # comma list of name[:weight] or file.py:function[:weight]; names: gold, rm, format, length
data_path = "builtin"  # 'builtin' (the review task's train prompts) or a JSONL file of {"prompt"}
template = "plain"  # prompt template for JSONL prompts: 'plain' or 'instruction'
# GRPO
group_size = 8  # G: responses sampled per prompt
prompts_per_batch = 16  # prompts per rollout batch (per process); batch = prompts_per_batch * G responses
advantage = "grpo"  # 'grpo' (r-mean)/std, 'drgrpo' r-mean, 'rloo' leave-one-out, 'batch_centred' / 'batch_raw' batch std
# (also 'reinforce' / 'reinforce_baseline': REINFORCE++'s global-batch normalisation, grpo_variants.py)
objective = "ppo"  # 'ppo' clipped token ratio (GRPO), 'gspo' sequence ratio (GSPO), 'cispo' clipped IS weight (CISPO)
loss_agg = "seq"  # 'seq' (GRPO), 'token' (DAPO), 'fixed' (Dr. GRPO): how token losses are averaged
clip_low = 0.2  # ratio clipped below at 1 - clip_low
clip_high = 0.2  # ratio clipped above at 1 + clip_high (DAPO clip-higher: 0.28)
kl_coef = 0.02  # weight of the KL(policy || reference) in the loss; 0 drops the reference model
kl_estimator = "k3"  # 'k3' (sampled-token estimator, GRPO) or 'full' (exact full-vocabulary KL, true gradient)
# (also 'k3+': k3's value, k2's gradient; 'k3_corrected': k3 x pi/pi_old, DeepSeek-V3.2)
kl_in = "loss"  # 'loss' (the KL estimator in the loss, GRPO) or 'reward' (k1 per token in the reward, PPO-RLHF)
dynamic_sampling = False  # DAPO: drop groups whose rewards are all equal and sample more prompts
max_gen_batches = 4  # dynamic sampling: at most this many rollout rounds per iteration
overlong_cache = 0  # DAPO soft overlong punishment over the last this many tokens before max_new_tokens (0: off)
overlong_penalty = 1.0  # ... reaching -overlong_penalty at max_new_tokens
ent_coef = 0.0  # entropy bonus weight (0: entropy is only logged)
ppo_epochs = 2  # inner passes over each rollout batch
minibatch_size = 64  # responses per gradient step (per process); must divide the batch
max_new_tokens = 32  # response length limit
temperature = 1.0  # sampling temperature, > 0 (the log-probs are of this tempered policy)
# optimisation
max_iters = 30  # rollout batches
lr = 3e-4  # peak learning rate (use ~1e-6 for GPT-2 weights)
warmup_iters = 5  # linear warmup (in rollout batches)
weight_decay = 0.0  # AdamW weight decay on matrices
grad_clip = 1.0  # clip the global gradient norm (0: off)
# eval and logging
log_interval = 5  # log training metrics every this many rollout batches
eval_interval = 10  # held-out eval (gold, kl) every this many rollout batches
eval_repeats = 4  # responses per held-out prompt (4 x 50 test prompts: less noise)
n_print = 3  # samples printed at each eval
# runtime
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank)
compile = False  # torch.compile the policy
fused_lm_head = False  # old, reference and new log-probs straight from hidden states (kernels.linear_logprobs_entropy): no logits

# ----------------------------------------------------------------------------- pure functions
ZERO_STD = 1e-6  # a group whose rewards' sample std is below this counts as all-equal: advantage exactly 0
ADVANTAGES = ("grpo", "drgrpo", "rloo", "batch_centred", "batch_raw")


def group_advantages(rewards, mode="grpo", eps=1e-6):
    """rewards (n_groups, G) -> advantages (n_groups, G), one per response, shared by its tokens.
    grpo: (r - mean) / (std + eps) (Shao et al. 2024); drgrpo: r - mean (Liu et al. 2025);
    rloo: r - mean of the other G-1 (Ahmadian et al. 2024); batch_centred / batch_raw: (r - group mean)
    over the batch std of the group-centred / raw rewards (REINFORCE++-baseline / TRL's "batch"), over all
    ranks under DDP. std is the unbiased sample std as in TRL. Computed in fp64; a group whose std is
    below ZERO_STD gets exactly 0 (see the docstring at the top)."""
    G = rewards.shape[1]
    if G < 2:
        raise UserError("group advantages need group_size >= 2 (one response has no group to compare with)")
    if mode not in ADVANTAGES:
        raise UserError(f"unknown advantage {mode!r}: use one of {', '.join(ADVANTAGES)}")
    r = rewards.double()
    centred = r - r.mean(1, keepdim=True)
    std = r.std(1, keepdim=True)
    if mode == "grpo":
        adv = centred / (std + eps)
    elif mode == "drgrpo":
        adv = centred
    elif mode == "rloo":
        adv = centred * G / (G - 1)  # r_i - (sum - r_i) / (G - 1)
    else:
        x = centred if mode == "batch_centred" else r
        sums = torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), dtype=x.dtype, device=x.device)])
        if torch.distributed.is_initialized():  # the batch is every rank's responses
            torch.distributed.all_reduce(sums)
        total, sq, n = sums
        var = ((sq - total * total / n) / (n - 1).clamp(min=1)).clamp(min=0)
        adv = centred / (var.sqrt() + eps)
    return adv.masked_fill(std < ZERO_STD, 0.0).to(rewards.dtype)


def clipped_policy_loss(logp, old_logp, adv, clip_low=0.2, clip_high=0.2):
    """PPO's clipped surrogate with separate bounds (DAPO clip-higher). logp, old_logp (B, N) log-probs of
    the sampled tokens, adv (B,) or (B, N). Returns per-token loss (B, N) and the masks of tokens whose
    gradient the clip cuts: clipped_low (ratio < 1 - clip_low, adv < 0) and clipped_high (ratio > 1 +
    clip_high, adv > 0)."""
    adv = adv[:, None] if adv.dim() == 1 else adv
    ratio = torch.exp(logp - old_logp)
    loss = -torch.min(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    return loss, (ratio < 1 - clip_low) & (adv < 0), (ratio > 1 + clip_high) & (adv > 0)


def aggregate(per_token, mask, mode="seq", max_len=None, n_tokens=None):
    """per_token (B, N) and mask (B, N) -> scalar. seq: mean per response then over responses (GRPO);
    token: mean over all tokens (DAPO); fixed: sum / (B * max_len) (Dr. GRPO's constant normaliser).
    n_tokens: token mode's denominator (default mask.sum()); under DDP pass the all-ranks token count /
    world size, so that DDP's gradient average is the mean over every rank's tokens."""
    m = mask.float()
    if mode == "seq":
        return ((per_token * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    if mode == "token":
        return (per_token * m).sum() / (m.sum() if n_tokens is None else n_tokens).clamp(min=1)
    if mode == "fixed":
        return (per_token * m).sum() / (per_token.shape[0] * (max_len or per_token.shape[1]))
    raise UserError(f"unknown loss_agg {mode!r}: use 'seq', 'token' or 'fixed'")


def response_logprobs(model, tokens, attn, labels, temperature=1.0, fused=False, ref=None):
    """The one call for every log-prob a ratio or KL compares (old, reference, new): log-probs and
    entropies (B, N) fp32 of the response tokens under softmax(logits / temperature), and with ref =
    (ref_hidden, ref_weight) the exact per-token KL (B, N) as a third output. tokens, attn (B, P + N);
    labels (B, N), -100 after a response ends. The logits at P-1+j predict response token j, so the last
    token is not an input. fused: straight from the hidden states (kernels.linear_logprobs_entropy)."""
    return model(tokens[:, :-1], attn[:, :-1], labels=labels, temperature=temperature, fused=fused, ref=ref)


def token_loss(logp, old_logp, adv, ent, kl_tok=None, clip_low=0.2, clip_high=0.2, kl_coef=0.0, ent_coef=0.0,
               objective="ppo", mask=None):
    """GRPO's per-token loss (B, N): the surrogate, minus ent_coef * entropy, plus kl_coef * the per-token
    KL (kl_tok (B, N): k3 or a variant of (logp, ref_logp), or the exact KL; None: no KL term). The KL is
    in the loss, not in the reward: its gradient flows through logp directly (Shao et al. 2024, eq. 3).
    objective: 'ppo' the clipped token ratio; 'gspo' / 'cispo' (grpo_variants.py; GSPO needs the
    response mask (B, N) for its sequence ratio). Returns (per_token, surrogate, clipped_low, clipped_high)."""
    if objective == "gspo":
        pg, clip_lo, clip_hi = gv.gspo_policy_loss(logp, old_logp, adv, mask, clip_low, clip_high)
    elif objective == "cispo":
        pg, clip_lo, clip_hi = gv.cispo_policy_loss(logp, old_logp, adv, clip_low, clip_high)
    else:
        pg, clip_lo, clip_hi = clipped_policy_loss(logp, old_logp, adv, clip_low, clip_high)
    per_token = pg - ent_coef * ent
    if kl_tok is not None:
        per_token = per_token + kl_coef * kl_tok
    return per_token, pg, clip_lo, clip_hi


# ----------------------------------------------------------------------------- reward functions
def gold_reward(prompts, responses):
    """The built-in task's hidden scorer as a verifiable reward (data.gold), about [-2, 1]."""
    return [data.gold(p, r) for p, r in zip(prompts, responses)]


def format_reward(prompts, responses):
    """1 if every sentence is in the grammar and the response ended, else 0."""
    return [float(data.parses(p, r)) for p, r in zip(prompts, responses)]


def length_reward(prompts, responses):
    """Response length in words / 10 (weight > 0 favours long answers, < 0 short ones)."""
    return [len(r.replace(data.EOT_TEXT, "").split()) / 10 for r in responses]


BUILTIN_REWARDS = {"gold": gold_reward, "format": format_reward, "length": length_reward}


def load_rewards(spec, builtins=BUILTIN_REWARDS):
    """'gold:1.0,my.py:fn:0.5' -> [(name, fn, weight)]. An entry is name[:weight] (a key of `builtins`)
    or file.py:function[:weight] (imported from the file; the path is relative to the working dir)."""
    out = []
    for entry in [e.strip() for e in spec.split(",") if e.strip()]:
        parts = entry.split(":")
        weight = 1.0
        if len(parts) > 1 and parts[-1] and parts[-1][0] in "+-.0123456789":
            try:
                weight = float(parts[-1])
            except ValueError:
                raise UserError(f"--rewards entry {entry!r}: weight {parts[-1]!r} is not a number") from None
            parts = parts[:-1]
        if parts[0].endswith(".py"):
            if len(parts) != 2:
                raise UserError(f"--rewards entry {entry!r}: write a file's function as file.py:function[:weight]")
            path, fn_name = parts
            if not os.path.exists(path):
                raise MissingFile(f"--rewards entry {entry!r}: no file {path}")
            spec_ = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)
            fn = getattr(module, fn_name, None)
            if not callable(fn):
                raise UserError(f"--rewards entry {entry!r}: {path} has no function {fn_name!r}")
            out.append((f"{os.path.basename(path)[:-3]}.{fn_name}", fn, weight))
        elif len(parts) == 1 and parts[0] in builtins:
            out.append((parts[0], builtins[parts[0]], weight))
        else:
            raise UserError(f"--rewards entry {entry!r}: unknown reward; built in: {', '.join(builtins)}, "
                             f"or your own as file.py:function[:weight]")
    if not out:
        raise UserError("--rewards is empty: name at least one reward, e.g. --rewards=gold")
    return out


def score(reward_fns, prompts, responses, token_ids=None):
    """Run every reward function; returns the weighted sum (len(responses),) and each function's scores.
    token_ids (the sampled prompt + response ids) go to the reward model only: see rm_reward."""
    each = {}
    for name, fn, _ in reward_fns:
        r = fn(prompts, responses, token_ids=token_ids) if name == "rm" and token_ids else fn(prompts, responses)
        r = [float(x) for x in r]
        bad = [x for x in r if not math.isfinite(x)]
        if len(r) != len(responses) or bad:
            raise UserError(f"reward {name!r} returned {len(r)} scores ({len(bad)} not finite, e.g. "
                             f"{bad[:1]}) for {len(responses)} responses: it must return one finite float per response")
        each[name] = torch.tensor(r)
    total = sum(w * each[name] for name, _, w in reward_fns)
    return total, each


if __name__ == "__main__":
    config = configure(globals())

    # ----------------------------------------------------------------------------- runtime
    rt = setup(device, dtype, seed)
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if rt.master:
        os.makedirs(out_dir, exist_ok=True)
    batch = prompts_per_batch * group_size
    if kl_estimator not in ("k3", "full", "k3+", "k3_corrected"):
        raise UserError(f"--kl_estimator={kl_estimator!r}: use 'k3', 'k3+', 'k3_corrected' or 'full'")
    if objective not in ("ppo", "gspo", "cispo"):
        raise UserError(f"--objective={objective!r}: use 'ppo', 'gspo' or 'cispo'")
    if advantage not in ADVANTAGES + ("reinforce", "reinforce_baseline"):
        raise UserError(f"--advantage={advantage!r}: use one of {', '.join(ADVANTAGES)}, reinforce or "
                        f"reinforce_baseline")
    if not temperature > 0:  # the log-probs are of softmax(logits / temperature): 0 would divide by 0
        raise UserError(f"--temperature={temperature}: must be > 0 (GRPO needs a sampling policy's log-probs; "
                        f"greedy decoding has none)")
    if kl_in not in ("loss", "reward") or (kl_in == "reward" and kl_estimator != "k3"):
        raise UserError(f"--kl_in={kl_in!r} --kl_estimator={kl_estimator!r}: use --kl_in=loss (with any "
                        f"estimator) or --kl_in=reward (k1 in the reward; leave --kl_estimator at k3)")
    if overlong_cache and not 0 < overlong_cache <= max_new_tokens:
        raise UserError(f"--overlong_cache={overlong_cache}: use 1..max_new_tokens ({max_new_tokens}), or 0 (off)")
    if batch % minibatch_size:
        raise UserError(f"minibatch_size {minibatch_size} must divide prompts_per_batch * group_size = {batch}")

    # ----------------------------------------------------------------------------- models
    if init_from not in ("sft", "resume"):
        raise UserError(f"--init_from={init_from!r}: use 'sft' (start from --sft_path) or 'resume'")
    policy, vocab, ckpt = load_model(out_dir if init_from == "resume" else sft_path)
    if ckpt is None:
        raise UserError(f"sft_path={sft_path!r}: GRPO starts from one of our SFT checkpoints (python sft.py)")
    tok = data.Tokenizer(vocab)
    policy.to(rt.device)
    if disable_dropout(policy) and rt.master:
        print("note: dropout set to 0 (the rollout and the update must be the same function)")
    ref = None
    if kl_coef > 0:  # the frozen reference: never wrapped in DDP, never trained
        ref, ref_vocab, _ = load_model(sft_path)
        check_vocab(vocab, ref_vocab, f"policy vs reference {sft_path}")
        ref.to(rt.device).eval().requires_grad_(False)
        disable_dropout(ref)

    reward_fns = load_rewards(rewards, {**BUILTIN_REWARDS, "rm": None})
    if any(name == "rm" for name, _, _ in reward_fns):
        rm, rm_vocab, rm_ckpt = load_model(reward_path, scalar_head=True)
        rm.to(rt.device).eval().requires_grad_(False)
        rm_tok = data.Tokenizer(rm_vocab)
        gain, bias = rm_ckpt.get("reward_gain", 1.0), rm_ckpt.get("reward_bias", 0.0)

        same_vocab = list(rm_vocab or []) == list(vocab or [])

        @torch.no_grad()
        def rm_reward(prompts, responses, token_ids=None, chunk=64):
            """The reward model's score of prompt + response (at its last token), normalised with the gain
            and bias reward.py stored so that SFT samples score mean 0, std 1. Given the sampled token_ids
            (and a shared vocabulary) it scores exactly those: decoding and re-encoding text is not always
            the identity (two sampled "." decode to "..", which BPE encodes as one other token)."""
            if not (token_ids and same_vocab):
                token_ids = [rm_tok.encode(p + r, "reward model input") for p, r in zip(prompts, responses)]
            seqs = [s[-rm.config.block_size:] for s in token_ids]
            out = []
            for i in range(0, len(seqs), chunk):
                part = seqs[i:i + chunk]
                L = max(len(s) for s in part)
                x = torch.full((len(part), L), rm_tok.eot, dtype=torch.long)
                m = torch.zeros(len(part), L, dtype=torch.bool)
                for j, s in enumerate(part):  # right padding: the score sits at each row's last real token
                    x[j, :len(s)], m[j, :len(s)] = torch.tensor(s), True
                x, m = x.to(rt.device), m.to(rt.device)
                with rt.ctx:
                    out += (gain * gather_last(rm(x, m).float(), m) + bias).tolist()
            return out

        reward_fns = [(n, rm_reward if n == "rm" else fn, w) for n, fn, w in reward_fns]

    # ----------------------------------------------------------------------------- data
    if data_path == "builtin":
        train_prompts = data.task_prompts("train")
        eval_prompts = data.task_prompts("test") * eval_repeats
    else:
        train_prompts = [data.format_prompt(r["prompt"], template) for r in data.read_jsonl(data_path, ("prompt",))]
        eval_prompts = train_prompts[:n_print]  # no gold scorer for your data: we print samples instead
    max_prompt = policy.config.block_size - max_new_tokens
    data.encode_prompts(tok, train_prompts + eval_prompts, max_prompt)  # fail now, not mid-run
    if len(train_prompts) < prompts_per_batch * rt.world_size:  # a batch's prompts are distinct
        raise UserError(f"{data_path}: {len(train_prompts)} prompts, fewer than prompts_per_batch x processes = "
                         f"{prompts_per_batch * rt.world_size}; lower --prompts_per_batch or add prompts")

    # ----------------------------------------------------------------------------- optimizer
    optimizer = configure_optimizer(policy, lr, weight_decay, device_type=rt.device_type)
    iter_num = 0
    if init_from == "resume":
        optimizer.load_state_dict(ckpt["optimizer"])
        iter_num = ckpt["iter_num"]
    raw_policy = policy
    if compile:
        policy = torch.compile(policy)
    if rt.ddp:
        policy = DDP(policy, device_ids=[int(rt.device.split(":")[1])] if rt.device_type == "cuda" else None)

    @torch.no_grad()
    def evaluate():
        """Held-out prompts: gold, parse, ended, response_len and the sequence KL to the reference."""
        raw_policy.eval()  # rank 0 only: the raw model (DDP's forward would wait for the other ranks)
        with rt.ctx:
            texts, lengths, kls = data.sample_responses(raw_policy, tok, eval_prompts, max_new_tokens,
                                                        temperature, ref=ref)
        out = data.task_report(eval_prompts, texts, lengths, kls) if data_path == "builtin" else {}
        for p, r in list(zip(eval_prompts, texts))[:n_print]:
            print(f"  {p!r} -> {r!r}" + (f"  gold {data.gold(p, r):+.2f}" if data_path == "builtin" else ""))
        return out

    def rollout():
        """Draw prompts_per_batch prompts, sample G responses each, score them. (DDP: all ranks draw the
        same prompts_per_batch x world prompts, each keeps every world-th.)"""
        drawn = rng.sample(train_prompts, prompts_per_batch * rt.world_size)[rt.rank::rt.world_size]
        prompts = [p for p in drawn for _ in range(group_size)]
        raw_policy.eval()
        with torch.no_grad(), rt.ctx:
            roll = raw_policy.generate(data.encode_prompts(tok, prompts, max_prompt), max_new_tokens,
                                       tok.eot, temperature)
        tokens, attn, mask, P = roll["tokens"], roll["attention_mask"], roll["response_mask"], roll["prompt_len"]
        lengths = mask.sum(1)
        texts = [tok.decode(row[:n]) for row, n in zip(tokens[:, P:].tolist(), lengths.tolist())]
        ids = [row[m].tolist() for row, m in zip(tokens, attn)]  # unpadded prompt + response, for the RM
        reward, each = score(reward_fns, prompts, texts, ids)
        if overlong_cache:  # DAPO's soft overlong punishment is part of the reward
            each["overlong"] = gv.overlong_penalty(lengths.cpu(), max_new_tokens, overlong_cache, overlong_penalty)
            reward = reward + each["overlong"]
        return roll, prompts, texts, ids, reward, each

    def sample_groups():
        """One rollout round for dynamic sampling: rewards (groups, G) and each group's G rows (prompt,
        prompt ids, response ids, text, reward, reward parts)."""
        roll, prompts, texts, ids, reward, each = rollout()
        n_resp = roll["response_mask"].sum(1).tolist()
        rows = [(prompts[i], ids[i][:len(ids[i]) - n], ids[i][len(ids[i]) - n:], texts[i], reward[i],
                 {k: v[i] for k, v in each.items()}) for i, n in enumerate(n_resp)]
        return reward.view(-1, group_size), [rows[g:g + group_size] for g in range(0, len(rows), group_size)]

    def any_rank(need):
        """DDP: every rank samples another round while any rank still needs groups (same rng draws)."""
        if not rt.ddp:
            return need
        t = torch.tensor(float(need), device=rt.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    # ----------------------------------------------------------------------------- training loop
    rng = random.Random(seed)  # the same on every rank: each draws the global batch and keeps its share
    if init_from == "resume":  # continue the data order and sampling exactly where the checkpoint was
        restore_rng(ckpt.get("rng"), rng, rt)
    start_iter = iter_num
    t0, logs = time.time(), []
    while True:
        if (iter_num % eval_interval == 0 or iter_num == max_iters) and not (init_from == "resume" and iter_num == start_iter):
            if rt.master:  # (a resumed run's checkpoint was evaluated and saved already)
                log_metrics(metrics_path, {"iter": iter_num, **evaluate()})
            rng_now = rng_state(rng, rt)  # every rank's, after the eval's sampling
            if iter_num > 0 and rt.master:
                save_checkpoint(os.path.join(out_dir, "ckpt.pt"), dict(
                    model=raw_policy.state_dict(), model_args=model_args_of(raw_policy),
                    optimizer=optimizer.state_dict(), iter_num=iter_num, config=config, vocab=vocab, rng=rng_now))
        if iter_num >= max_iters:
            break
        for g in optimizer.param_groups:
            g["lr"] = cosine_lr(iter_num, lr, warmup_iters, max_iters)

        # rollout: G responses for each of prompts_per_batch prompts (a group is G consecutive rows)
        if not dynamic_sampling:
            roll, prompts, texts, ids, reward, each = rollout()
            ds = None
        else:  # DAPO: only groups whose rewards differ, re-padded into one batch
            kept, ds = gv.dynamic_sampling(sample_groups, prompts_per_batch, max_gen_batches, any_rank)
            rows = [row for group in kept for row in group]
            prompts, texts, reward = [r[0] for r in rows], [r[3] for r in rows], torch.stack([r[4] for r in rows])
            ids = [r[1] + r[2] for r in rows]
            each = {k: torch.stack([r[5][k] for r in rows]) for k in rows[0][5]}
            roll = {k: v.to(rt.device) if torch.is_tensor(v) else v
                    for k, v in gv.pad_rollout([r[1] for r in rows], [r[2] for r in rows], tok.eot).items()}
        tokens, attn, mask, P = roll["tokens"], roll["attention_mask"], roll["response_mask"], roll["prompt_len"]
        labels = tokens[:, P:].masked_fill(~mask, -100)
        lengths = mask.sum(1)
        groups = reward.view(prompts_per_batch, group_size)
        if advantage not in ("reinforce", "reinforce_baseline"):  # (REINFORCE++: below, once the KL is known)
            adv = group_advantages(groups, advantage).view(-1).to(rt.device)

        # old (behaviour) log-probs and the reference's log-probs (k3) or final hidden states (full KL,
        # (B, N, C): the update turns them into the exact KL without ever holding reference logits).
        # Old, reference and new log-probs all come from response_logprobs, fused or not alike: the first
        # ratio is exactly 1 and the first k3 exactly 0, in bf16 too.
        ref_logp = ref_hidden = None
        with torch.no_grad(), rt.ctx:
            old_logp, _ = response_logprobs(raw_policy, tokens, attn, labels, temperature, fused_lm_head)
            if ref is not None and (kl_estimator != "full" or kl_in == "reward"):
                ref_logp, _ = response_logprobs(ref, tokens, attn, labels, temperature, fused_lm_head)
            elif ref is not None:
                ref_hidden = ref(tokens[:, :-1], attn[:, :-1], hidden=True)[:, P - 1:]
        kl_return = None  # --kl_in=reward: -kl_coef x the k1 reward-to-go, part of every token's advantage
        if ref is not None and kl_in == "reward":
            kl_return = gv.kl_reward_to_go(old_logp, ref_logp, mask, kl_coef)
        if advantage in ("reinforce", "reinforce_baseline"):  # REINFORCE++: whitened over the global batch
            adv = gv.reinforce_pp_advantages(groups, mask, advantage == "reinforce_baseline", kl_return)
        elif kl_return is not None:
            adv = (adv[:, None] + kl_return) * mask

        # update: ppo_epochs passes over the batch in shuffled minibatches
        policy.train()
        stats = {k: [] for k in ("policy_loss", "kl", "entropy", "clipfrac_low", "clipfrac_high", "approx_kl")}
        for epoch in range(ppo_epochs):
            for idx in torch.randperm(batch).split(minibatch_size):
                m = mask[idx]
                ref_arg = None if ref_hidden is None else (ref_hidden[idx], ref.lm_head.weight)
                with rt.ctx:
                    out = response_logprobs(policy, tokens[idx], attn[idx], labels[idx], temperature, fused_lm_head,
                                            ref_arg)
                logp, ent = out[0], out[1]
                kl_tok = None
                if ref is not None and kl_in == "reward" and epoch == 0:  # the k1 penalty the reward carried
                    stats["kl"].append((((old_logp[idx] - ref_logp[idx]) * m).sum(1)).mean().item())
                if ref is not None and kl_in == "loss":  # k3 = r - 1 - log r >= 0 (Schulman 2020), its variants,
                    if kl_estimator == "full":            # or the exact KL (see the docstring)
                        kl_tok = out[2]
                    elif kl_estimator == "k3+":
                        kl_tok = gv.kl_k3_plus(logp, ref_logp[idx])
                    elif kl_estimator == "k3_corrected":
                        kl_tok = gv.kl_k3_corrected(logp, old_logp[idx], ref_logp[idx])
                    else:
                        kl_tok = kernels.kl_estimate(logp, ref_logp[idx], kind="k3")
                    stats["kl"].append(((kl_tok * m).sum(1)).mean().item())
                per_token, pg, clip_lo, clip_hi = token_loss(logp, old_logp[idx], adv[idx], ent, kl_tok, clip_low,
                                                             clip_high, kl_coef, ent_coef, objective, m)
                n_tokens = None
                if rt.ddp and loss_agg == "token":  # DAPO's token mean over every rank's tokens
                    n_tokens = m.sum().float()
                    torch.distributed.all_reduce(n_tokens)
                    n_tokens = n_tokens / rt.world_size
                loss = aggregate(per_token, m, loss_agg, max_new_tokens, n_tokens)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"iter {iter_num}: loss is {loss.item()}; lower --lr, raise --kl_coef "
                                       f"or check your reward function for huge values")
                loss.backward()
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    n_tok = m.sum().clamp(min=1)
                    log_ratio = (logp - old_logp[idx]).detach()
                    stats["policy_loss"].append(aggregate(pg.detach(), m, loss_agg, max_new_tokens, n_tokens).item())
                    stats["entropy"].append(((ent.detach() * m).sum() / n_tok).item())
                    stats["clipfrac_low"].append(((clip_lo & m).sum() / n_tok).item())
                    stats["clipfrac_high"].append(((clip_hi & m).sum() / n_tok).item())
                    stats["approx_kl"].append((((log_ratio.exp() - 1 - log_ratio) * m).sum() / n_tok).item())
        iter_num += 1

        # monitoring: what the rollout looked like and what the update did
        row = {"reward": reward.mean().item(), "reward_std": reward.std().item(),
               **{f"reward/{k}": v.mean().item() for k, v in each.items()},
               "zero_std_frac": (groups.double().std(1) < ZERO_STD).float().mean().item() if ds is None else
                                ds["zero_std"] / ds["groups"],  # (dynamic sampling: of all groups sampled)
               **({} if ds is None else {"gen_batches": ds["rounds"], "filled_groups": ds["filled"]}),
               **{k: sum(v) / len(v) for k, v in stats.items() if v},
               "response_len": lengths.float().mean().item(),
               "ended": sum(t.endswith(data.EOT_TEXT) for t in texts) / len(texts)}
        if data_path == "builtin" and "gold" not in each:  # train_gold: "gold" alone is the held-out eval
            row["train_gold"] = sum(gold_reward(prompts, texts)) / len(texts)
        logs.append(row)
        if iter_num % log_interval == 0 and rt.master:
            avg = {k: sum(r[k] for r in logs) / len(logs) for k in logs[0]}
            avg["clipfrac"] = avg["clipfrac_low"] + avg["clipfrac_high"]
            log_metrics(metrics_path, {"iter": iter_num, **avg, "lr": optimizer.param_groups[0]["lr"],
                                       "s_per_iter": (time.time() - t0) / len(logs)})
            t0, logs = time.time(), []
        elif iter_num % log_interval == 0:
            logs = []

    if rt.ddp:
        torch.distributed.destroy_process_group()
