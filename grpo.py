"""
grpo.py (goldRLHF): Group Relative Policy Optimization with pluggable reward functions.

For each prompt, sample a group of G responses, score them, and push up the log-probability of the
responses that beat their group: the group itself is the baseline, so no value model is trained
(GRPO, Shao et al. 2024, "DeepSeekMath"; DeepSeek-AI 2025, "DeepSeek-R1"). The update is PPO's
clipped surrogate (Schulman et al. 2017) with a k3 KL penalty to the frozen SFT model in the loss.

    python grpo.py                                          # built-in task, gold ("verifiable") reward
    python grpo.py --reward_fns=rm                          # the trained reward model (python reward.py)
    python grpo.py --reward_fns="gold:1.0,length:0.1"       # weighted sum of several rewards
    python grpo.py --reward_fns="my_reward.py:score:1.0"    # your own function, in your own file
    python grpo.py --advantage=drgrpo --loss_agg=fixed      # Dr. GRPO
    python grpo.py --clip_high=0.28 --loss_agg=token        # DAPO's clip-higher and token-level loss
    torchrun --nproc_per_node=2 grpo.py                     # DDP

Rewards (--reward_fns): a comma-separated list of `name[:weight]` or `file.py:function[:weight]`, the
reward of a response their weighted sum. Built in: gold (the task's verifiable reward), rm (the reward
model of --reward_path), format, length; any `fn(prompts, responses) -> list[float]` of your own in a
file (reward_functions.py says more).

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

The rest of the family is a flag each, the math a pure function in grpo_variants.py (its docstrings
cite the sources; the README's GRPO table measures them): --objective=gspo (GSPO) / cispo (CISPO),
--advantage=reinforce / reinforce_baseline (REINFORCE++), --kl_in=reward (k1 in the reward, PPO-style),
--kl_estimator=k3+ (verl) / k3_corrected (DeepSeek-V3.2), --dynamic_sampling and --overlong_cache (DAPO).

Departures from the papers: one small model and rewards on text; the KL term has its own coefficient
and kl_coef=0 skips the reference model entirely (then no held-out KL is reported). Every log-prob a
ratio or KL compares (old, reference, new) comes from one call, response_logprobs: the same forward,
the same fused / unfused lm_head, the same dtype, so under bf16 and --fused_lm_head the first ratio is
exactly 1 and the first k3 exactly 0 (old log-probs from the sampler, or from bf16 logits against fused
fp32 ones, differ by rounding: mean |d logp| ~0.01 here, ~0.1 at GPT-2's logit scale, enough to clip).
Dropout is forced to 0 (as TRL's disable_dropout): with it the first ratio would not be 1 either.
Writes out_dir/ckpt.pt (a plain LM: sample.py reads it) and out_dir/metrics.jsonl.
"""
import time

import torch

import common
import data
import grpo_variants as gv
import kernels
import reward_functions
import rlaif
import task
from common import log_metrics
from configurator import UserError, configure
from model import disable_dropout, response_logprobs

# ----------------------------------------------------------------------------- config
out_dir = "out/grpo"  # checkpoint, metrics.jsonl go here
init_from = "sft"  # 'sft' (policy starts from sft_path) or 'resume' (continue from out_dir/ckpt.pt)
sft_path = "out/sft/ckpt.pt"  # SFT checkpoint: the policy's start and the frozen reference (unused if kl_coef=0)
reward_path = "out/reward/ckpt.pt"  # reward model checkpoint (reward.py), used by the 'rm' reward; or one per aspect, comma-separated
reward_ensemble = "mean"  # an ensemble reward model (reward.py --ensemble=K): 'mean', 'worst' (min over members), 'uncertainty'
uncertainty_coef = 1.0  # --reward_ensemble=uncertainty: the 'rm' reward is mean - uncertainty_coef * std over members
aspect_weights = ""  # several reward models: the 'rm' reward is their weighted sum, 'opinion:1,recommendation:0.5' or '1,0.5' ('' all 1)
reward_fns = "gold"  # comma list of name[:weight] or file.py:function[:weight]; names: gold, rm, judge, format, length
judge_path = "out/judge"  # the 'judge' reward's AI judge (rlaif.py): its round-robin log-odds within each group are the reward
judge_principles = ""  # the judge's principles file ('' = 'Prefer the better review.'), one drawn per group
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


if __name__ == "__main__":
    config = configure(globals(), choices=dict(
        init_from=("sft", "resume"), advantage=ADVANTAGES + ("reinforce", "reinforce_baseline"),
        objective=("ppo", "gspo", "cispo"), loss_agg=("seq", "token", "fixed"), kl_in=("loss", "reward"),
        kl_estimator=("k3", "full", "k3+", "k3_corrected"), template=("plain", "instruction"),
        reward_ensemble=("mean", "worst", "uncertainty")))
    n_responses = prompts_per_batch * group_size  # per rollout batch, per process
    if not temperature > 0:  # the log-probs are of softmax(logits / temperature): 0 would divide by 0
        raise UserError(f"--temperature={temperature}: must be > 0 (GRPO needs a sampling policy's log-probs; "
                        f"greedy decoding has none)")
    if kl_in == "reward" and kl_estimator != "k3":
        raise UserError(f"--kl_in=reward --kl_estimator={kl_estimator!r}: the reward carries k1", fix="use "
                        "--kl_in=loss (with any estimator), or --kl_in=reward and leave --kl_estimator at k3")
    if overlong_cache and not 0 < overlong_cache <= max_new_tokens:
        raise UserError(f"--overlong_cache={overlong_cache}: use 1..max_new_tokens ({max_new_tokens}), or 0 (off)")
    if n_responses % minibatch_size:
        raise UserError(f"minibatch_size {minibatch_size} must divide prompts_per_batch * group_size = {n_responses}")
    rt = common.setup(device, dtype, seed, out_dir)

    # ----------------------------------------------------------------------------- models
    policy, vocab, ckpt = common.load_model(out_dir if init_from == "resume" else sft_path)
    if ckpt is None:
        raise UserError(f"sft_path={sft_path!r}: GRPO starts from one of our SFT checkpoints (python sft.py)")
    ckpt = ckpt if init_from == "resume" else None
    tok = data.Tokenizer(vocab)
    policy.to(rt.device)
    if disable_dropout(policy) and rt.master:
        print("note: dropout set to 0 (the rollout and the update must be the same function)")
    # the frozen reference: never wrapped in DDP, never trained; kl_coef = 0 needs none
    ref = common.load_frozen(sft_path, vocab, "reference", rt.device)[0] if kl_coef > 0 else None
    scorers = reward_functions.load_rewards(reward_fns, {**reward_functions.BUILTIN_REWARDS, "rm": None, "judge": None})
    if any(name == "judge" for name, _, _ in scorers):  # direct RLAIF: the judge's preferences are the reward
        judge, jtok, _, _, principles = rlaif.load_judge(judge_path, judge_principles, rt.device)
        jfn = rlaif.judge_reward(judge, jtok, principles)
        scorers = [(n, jfn if n == "judge" else fn, w) for n, fn, w in scorers]
    if reward_ensemble != "mean" and not any(name == "rm" for name, _, _ in scorers):
        raise UserError(f"--reward_ensemble={reward_ensemble} combines a reward model ensemble, but --reward_fns="
                        f"{reward_fns!r} has no 'rm' reward", fix="add rm to --reward_fns, e.g. --reward_fns=rm")
    rm_list = []  # the reward models of the 'rm' reward (an ensemble: combined by --reward_ensemble)
    if any(name == "rm" for name, _, _ in scorers):
        rm_list = common.load_reward_models(reward_path, aspect_weights, vocab, rt.device, False, reward_ensemble,
                                            uncertainty_coef)
        rms = [(reward_functions.reward_model(m, data.Tokenizer(v), g, b, list(v or []) == list(vocab or []), rt.ctx), w)
               for m, v, g, b, w, _ in rm_list]
        def rm_reward(prompts, responses, token_ids=None):  # (several reward models: the weighted sum)
            scores = [fn(prompts, responses, token_ids=token_ids) for fn, _ in rms]
            return [sum(w * x for (_, w), x in zip(rms, xs)) for xs in zip(*scores)]
        scorers = [(n, rm_reward if n == "rm" else fn, w) for n, fn, w in scorers]

    # ----------------------------------------------------------------------------- data
    if data_path == "builtin":
        train_prompts = task.prompts("train")
        eval_prompts = task.prompts("test") * eval_repeats
    else:
        train_prompts = [data.format_prompt(r["prompt"], template) for r in data.read_jsonl(data_path, ("prompt",))]
        eval_prompts = train_prompts[:n_print]  # no gold scorer for your data: we print samples instead
    max_prompt = policy.config.block_size - max_new_tokens
    data.encode_prompts(tok, train_prompts + eval_prompts, max_prompt)  # fail now, not mid-run
    if len(train_prompts) < prompts_per_batch * rt.world_size:  # a batch's prompts are distinct
        raise UserError(f"{data_path}: {len(train_prompts)} prompts, fewer than prompts_per_batch x processes = "
                         f"{prompts_per_batch * rt.world_size}; lower --prompts_per_batch or add prompts")

    # ----------------------------------------------------------------------------- optimizer
    optimizer = common.configure_optimizer(policy, lr, weight_decay, rt.device_type)
    rng, iter_num = common.resume(ckpt, rt, seed, optimizer)  # the data order: the same on every rank
    raw_policy, policy = policy, common.wrap(policy, rt, compile)

    @torch.no_grad()
    def evaluate():
        """Held-out prompts: gold, parse, ended, response_len and the sequence KL to the reference."""
        raw_policy.eval()  # rank 0 only: the raw model (DDP's forward would wait for the other ranks)
        with rt.ctx:
            texts, lengths, kls, rows = data.sample_responses(raw_policy, tok, eval_prompts, max_new_tokens,
                                                              temperature, ref=ref, with_ids=True)
            same_vocab = all(list(v or []) == list(vocab or []) for _, v, *_ in rm_list)
            ens = common.ensemble_stats(rm_list, rows, tok.eot) if same_vocab else {}  # an ensemble's spread
        out = {**ens, **(task.report(eval_prompts, texts, lengths, kls) if data_path == "builtin" else {})}
        for p, r in list(zip(eval_prompts, texts))[:n_print]:
            print(f"  {p!r} -> {r!r}" + (f"  gold {task.gold(p, r):+.2f}" if data_path == "builtin" else ""))
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
        reward, each = reward_functions.score(scorers, prompts, texts, ids)
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
    start_iter = iter_num if ckpt else None
    t0, logs = time.time(), []
    while True:
        if common.eval_due(iter_num, eval_interval, max_iters, start_iter):
            common.evaluate_and_save(evaluate, out_dir, rt, iter_num, config, vocab, rng, raw_policy, optimizer)
        if iter_num >= max_iters:
            break
        common.set_lr(optimizer, common.cosine_lr(iter_num, lr, warmup_iters, max_iters))

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
            for idx in torch.randperm(n_responses).split(minibatch_size):
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
                common.optimizer_step(optimizer, policy, grad_clip)
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
            row["train_gold"] = sum(reward_functions.gold_reward(prompts, texts)) / len(texts)
        logs.append(row)
        if iter_num % log_interval == 0 and rt.master:
            avg = {k: sum(r[k] for r in logs) / len(logs) for k in logs[0]}
            avg["clipfrac"] = avg["clipfrac_low"] + avg["clipfrac_high"]
            log_metrics(rt.metrics_path, {"iter": iter_num, **avg, "lr": optimizer.param_groups[0]["lr"],
                                       "s_per_iter": (time.time() - t0) / len(logs)})
            t0, logs = time.time(), []
        elif iter_num % log_interval == 0:
            logs = []
    common.finish(rt)
