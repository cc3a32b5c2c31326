"""
grpo.py (goldRLHF): Group Relative Policy Optimization with pluggable reward functions.

Sample G responses per prompt, score them, and push up the log-probs of those that beat their group:
the group is the baseline, no value model (GRPO, Shao et al. 2024, "DeepSeekMath"; DeepSeek-AI 2025,
"DeepSeek-R1"). The update is PPO's clipped surrogate (Schulman et al. 2017) with a KL to the frozen
SFT model in the loss. The family, one flag each (the variants' math is in grpo_variants.py):
    --advantage    grpo (r - mean) / (std + eps) | drgrpo r - mean (Dr. GRPO, Liu et al. 2025) | rloo
                   r - mean of the other G-1 (Ahmadian et al. 2024; Kool et al. 2019) | batch_centred,
                   batch_raw: (r - group mean) / batch std of the centred (REINFORCE++-baseline) or raw
                   rewards (TRL's scale_rewards="batch"; Lite PPO) | reinforce(_baseline) (REINFORCE++, Hu 2025)
    --loss_agg     seq: per response, then over responses (GRPO) | token: over all tokens (DAPO, Yu et al.
                   2025) | fixed: sum / (responses * max_new_tokens) (Dr. GRPO)
    --objective    ppo: clipped token ratio | gspo: sequence ratio (GSPO) | cispo: clipped IS weight (CISPO)
    --kl_estimator k3 = r - 1 - log r, r = p_ref / p (GRPO) | full: exact KL over the vocabulary | k3+
                   (verl) | k3_corrected (DeepSeek-V3.2); --kl_in=reward: k1 in the reward (PPO-RLHF)
    DAPO           --clip_high > --clip_low (clip-higher), --dynamic_sampling, --overlong_cache
    --reward_agg   sum: GRPO on the weighted sum of --reward_fns | gdpo: each normalised in its group, the
                   weighted sum normalised over the batch (GDPO, arXiv 2601.05242)
k3's value is unbiased for KL(p || p_ref), its gradient that of KL(p_ref || p) (Tang & Munos 2025); 'full'
has the true per-token gradient. Neither has the KL's effect on later states (as in GRPO).

Departures: a group whose reward std is < ZERO_STD gets advantage exactly 0 (in fp64: equal rewards read
as equal); batch stds and DAPO's token mean span all DDP ranks; kl_coef=0 skips the reference; old,
reference and new log-probs share response_logprobs and dropout is 0: the first ratio is exactly 1.

    python grpo.py                                          # built-in task, gold ("verifiable") reward
    python grpo.py --reward_fns="gold:1.0,length:0.1"       # weighted sum (names: gold, rm, judge, format, length)
    python grpo.py --reward_fns="my_reward.py:score:1.0"    # your own function, in your own file (rewards.py)
    python grpo.py --advantage=drgrpo --loss_agg=fixed      # Dr. GRPO
    torchrun --nproc_per_node=2 grpo.py                     # DDP; writes out_dir/ckpt.pt and metrics.jsonl
"""
import time

import torch

import common
import data
import grpo_variants as gv
import kernels
import kl_estimators
import monitors
import rewards
import task
from common import log_metrics
from configurator import UserError, configure
from labelers import load_judge
from model import disable_dropout, response_logprobs

# ----------------------------------------------------------------------------- config
out_dir = "out/grpo"  # checkpoint, metrics.jsonl go here
init_from = "sft"  # 'sft' (policy starts from sft_path) or 'resume' (continue from out_dir/ckpt.pt)
overwrite = False  # replace what an earlier run left in out_dir: its checkpoint, metrics.jsonl (a fresh run refuses to)
sft_path = "out/sft/ckpt.pt"  # SFT checkpoint: the policy's start and the frozen reference (unused if kl_coef=0)
reward_path = "out/reward/ckpt.pt"  # the 'rm' reward's reward model (reward.py); or one per aspect, comma-separated
reward_ensemble = "mean"  # an ensemble reward model (reward.py --ensemble=K): 'mean', 'worst' (min over members), 'uncertainty'
uncertainty_coef = 1.0  # --reward_ensemble=uncertainty: the 'rm' reward is mean - uncertainty_coef * std over members [>= 0]
aspect_weights = ""  # several reward models' weights in 'rm': 'faithfulness:1,recommendation:0.5' or '1,0.5' ('' all 1)
reward_fns = "gold"  # comma list of name[:weight] or file.py:function[:weight]; names: gold, gold/<part>, rm, judge, format, length
judge_path = "out/judge"  # the 'judge' reward's AI judge (rlaif.py): reward = round-robin log-odds in the group
judge_principles = ""  # the judge's principles file ('' = 'Prefer the better review.'), one drawn per group
data_path = "builtin"  # 'builtin' (the review task's train prompts) or a JSONL file of {"prompt"}
template = "plain"  # prompt template for JSONL prompts: 'plain' or 'instruction'
# GRPO
group_size = 8  # G: responses sampled per prompt [> 0]
prompts_per_batch = 16  # prompts per rollout batch (per process); batch = prompts_per_batch * G responses [> 0]
advantage = "grpo"  # 'grpo' (r-mean)/std, 'drgrpo' r-mean, 'rloo', 'batch_*' batch std, 'reinforce*' REINFORCE++
reward_agg = "sum"  # several --reward_fns: 'sum' (GRPO on their weighted sum) or 'gdpo' (each normalised in its group: GDPO)
objective = "ppo"  # 'ppo' clipped token ratio (GRPO), 'gspo' sequence ratio (GSPO), 'cispo' clipped IS weight (CISPO)
loss_agg = "seq"  # 'seq' (GRPO), 'token' (DAPO), 'fixed' (Dr. GRPO): how token losses are averaged
clip_low = 0.2  # ratio clipped below at 1 - clip_low (CISPO: the weight's floor; 1.0 is none) [>= 0, <= 1]
clip_high = 0.2  # ratio clipped above at 1 + clip_high (DAPO clip-higher: 0.28; CISPO: the weight's cap) [>= 0]
kl_coef = 0.02  # weight of the KL(policy || reference) in the loss; 0 drops the reference model [>= 0]
kl_estimator = "k3"  # 'k3' (GRPO), 'full' (exact KL, true gradient), 'k3+' (verl), 'k3_corrected' (DeepSeek-V3.2)
kl_in = "loss"  # 'loss' (the KL estimator in the loss, GRPO) or 'reward' (k1 per token in the reward, PPO-RLHF)
dynamic_sampling = False  # DAPO: drop groups whose rewards are all equal and sample more prompts
max_gen_batches = 4  # dynamic sampling: at most this many rollout rounds per iteration [> 0]
overlong_cache = 0  # DAPO's soft overlong punishment over the last this many tokens (0: off) [>= 0, <= max_new_tokens]
overlong_penalty = 1.0  # ... reaching -overlong_penalty at max_new_tokens [>= 0]
ent_coef = 0.0  # entropy bonus weight (0: entropy is only logged) [>= 0]
ppo_epochs = 2  # inner passes over each rollout batch [> 0]
minibatch_size = 64  # responses per gradient step (per process) [> 0, divides prompts_per_batch * group_size]
max_new_tokens = 32  # response length limit [> 0]
temperature = 1.0  # sampling temperature (the log-probs are of this tempered policy) [> 0]
# optimisation
max_iters = 20  # rollout batches [> 0]
lr = 3e-4  # peak learning rate (use ~1e-6 for GPT-2 weights) [> 0]
warmup_iters = 5  # linear warmup (in rollout batches) [>= 0]
weight_decay = 0.0  # AdamW weight decay on matrices [>= 0]
grad_clip = 1.0  # clip the global gradient norm (0: off) [>= 0]
# eval and logging
log_interval = 5  # log training metrics every this many rollout batches [> 0]
eval_interval = 10  # held-out eval (gold, kl) every this many rollout batches [> 0]
eval_repeats = 4  # responses per held-out prompt (4 x 50 test prompts: less noise) [> 0]
n_print = 3  # samples printed at each eval [>= 0]
# reward-hacking monitors (monitors.py: no gold, every rollout batch, monitor/...; the reward model's need 'rm')
audit_path = ""  # a held-out audit reward model (reward.py --half=2; reward_path: --half=1): monitor/audit_gap ('' none)
monitor_judge = False  # monitor/judge_agree: the AI judge at judge_path against the reward model, on pairs within groups
stop_on = ""  # end at the first batch whose NAME>X (or <X): 'audit_gap>0.5', 'kl>4'; keeps the checkpoint before it
# runtime
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank) [>= 0]
compile = False  # torch.compile the policy
fused_lm_head = False  # log-probs straight from hidden states, no logits (kernels.linear_logprobs_entropy)

# ----------------------------------------------------------------------------- pure functions
ZERO_STD = 1e-6  # a group whose rewards' sample std is below this counts as all-equal: advantage exactly 0 [>= 0]
ADVANTAGES = ("grpo", "drgrpo", "rloo", "batch_centred", "batch_raw")


def group_advantages(rewards, mode="grpo", eps=1e-6):
    """rewards (n_groups, G) -> advantages (n_groups, G), by `mode` (the table at the top). std: the unbiased
    sample std (as TRL); in fp64; a group whose std is below ZERO_STD gets exactly 0."""
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
        adv = centred / (gv.batch_mean_std(centred if mode == "batch_centred" else r)[1] + eps)  # every rank's
    return adv.masked_fill(std < ZERO_STD, 0.0).to(rewards.dtype)


def clipped_policy_loss(logp, old_logp, adv, clip_low=0.2, clip_high=0.2):
    """PPO's clipped surrogate, ratio in [1 - clip_low, 1 + clip_high] (DAPO's clip-higher). logp, old_logp
    (B, N), adv (B,) or (B, N) -> per-token loss (B, N) and masks (B, N) of tokens the clip cuts, low / high."""
    adv = adv[:, None] if adv.dim() == 1 else adv
    ratio = torch.exp(logp - old_logp)
    loss = -torch.min(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    return loss, (ratio < 1 - clip_low) & (adv < 0), (ratio > 1 + clip_high) & (adv > 0)


def aggregate(per_token, mask, mode="seq", max_len=None, n_tokens=None):
    """per_token, mask (B, N) -> scalar, by --loss_agg `mode`. n_tokens: token mode's denominator (default
    mask.sum()); under DDP all ranks' tokens / world size, so DDP's gradient average is the global token mean."""
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
    """GRPO's per-token loss (B, N): `objective`'s surrogate - ent_coef * entropy + kl_coef * kl_tok (B, N; None:
    no KL), the KL in the loss (Shao et al. 2024, eq. 3). Returns (per_token, surrogate, clipped_low, clipped_high)."""
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
        reward_ensemble=("mean", "worst", "uncertainty"), reward_agg=("sum", "gdpo")),
        # each objective's own band unless set: GSPO's paper (a sequence ratio moves far less than a token's),
        # CISPO's (no floor, weight capped at 5 as TRL) with its token mean (MiniMax-M1 eq. 4)
        depends=dict(clip_low=("objective", {"gspo": 3e-4, "cispo": 1.0}),
                     clip_high=("objective", {"gspo": 4e-4, "cispo": 4.0}), loss_agg=("objective", {"cispo": "token"})))
    n_responses = prompts_per_batch * group_size  # per rollout batch, per process
    if kl_in == "reward" and kl_estimator != "k3":
        raise UserError(f"--kl_in=reward --kl_estimator={kl_estimator!r}: the reward carries k1", fix="use "
                        "--kl_in=loss (with any estimator), or --kl_in=reward and leave --kl_estimator at k3")
    if reward_agg == "gdpo" and len([e for e in reward_fns.split(",") if e.strip()]) + (overlong_cache > 0) < 2:
        raise UserError(f"--reward_agg=gdpo normalises several rewards one by one, and --reward_fns={reward_fns!r} "
                        "names one", fix="name two or more, e.g. --reward_fns=gold/faithfulness,gold/completeness")
    if reward_agg == "gdpo" and (advantage != "grpo" or kl_in == "reward"):
        raise UserError(f"--reward_agg=gdpo is GRPO's group normalisation, per reward: it takes --advantage=grpo and "
                        f"--kl_in=loss, not --advantage={advantage} --kl_in={kl_in}")
    uses = {e.split(":")[0].strip() for e in reward_fns.split(",")}  # the rewards named, so the inputs read
    if (audit_path or monitor_judge) and "rm" not in uses:
        raise UserError("--audit_path and --monitor_judge watch the reward model, and --reward_fns has no 'rm'",
                        fix="add rm to --reward_fns, or leave them out")
    stop = monitors.parse_stop(stop_on)
    rt = common.setup(device, dtype, seed, out_dir, config, ("sft_path", "data_path", "rm" in uses and "reward_path",
                                                           ("judge" in uses or monitor_judge) and "judge_path", "audit_path"))

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
    scorers = rewards.load_rewards(reward_fns, {**rewards.BUILTIN_REWARDS, "rm": None, "judge": None})
    if any(name == "judge" for name, _, _ in scorers):  # direct RLAIF: the judge's preferences are the reward
        judge, jtok, _, _, principles = load_judge(judge_path, judge_principles, rt.device)
        jfn = rewards.judge_reward(judge, jtok, principles)
        scorers = [(n, jfn if n == "judge" else fn, w) for n, fn, w in scorers]
    if reward_ensemble != "mean" and not any(name == "rm" for name, _, _ in scorers):
        raise UserError(f"--reward_ensemble={reward_ensemble} combines a reward model ensemble, but --reward_fns="
                        f"{reward_fns!r} has no 'rm' reward", fix="add rm to --reward_fns, e.g. --reward_fns=rm")
    rm = None
    if any(name == "rm" for name, _, _ in scorers):
        rm = rewards.load_reward_models(reward_path, vocab, rt.device, aspect_weights, False, reward_ensemble,
                                        uncertainty_coef)
        scorers = [(n, rm.reward_fn(rt.ctx) if n == "rm" else fn, w) for n, fn, w in scorers]
    watched = rm if rm is not None and all(p.same_vocab for p in rm.parts) else None  # monitors read the policy's ids
    audit = monitors.load_aside(rewards.load_reward_models, audit_path, vocab, rt.device) if audit_path else None
    mjudge = monitors.load_aside(load_judge, judge_path, judge_principles, rt.device) if monitor_judge else None

    # ----------------------------------------------------------------------------- data
    if data_path == "builtin":
        train_prompts, where = task.prompts("train"), "the built-in task's prompt"
        eval_prompts = task.prompts("test") * eval_repeats
    else:
        train_prompts, where = data.load_prompts(data_path, template, lines=True)  # (where: each one's file:line)
        eval_prompts = [p for p in train_prompts[:n_print] for _ in range(eval_repeats)]  # (a group each: the judge)
    task_only = [n for n, _, _ in scorers if n in rewards.TASK_ONLY]
    if task_only and data_path != "builtin" and not set(train_prompts) <= set(task.all_prompts()):
        raise UserError(f"--reward_fns={reward_fns!r}: {task_only[0]!r} scores only the built-in task's reviews, and "
                        f"{data_path} has prompts of its own", fix="score yours with rm (a reward.py model), judge "
                        "(an AI judge, rlaif.py), length, or your own file.py:function")
    max_prompt = data.prompt_room(max_new_tokens, {"policy": policy.config.block_size})  # (the 'rm' reward: cut)
    data.encode_prompts(tok, train_prompts, max_prompt, where)  # fail now, not mid-run
    if data_path == "builtin":  # (your eval prompts are among the train prompts: checked above)
        data.encode_prompts(tok, eval_prompts, max_prompt, "the built-in task's test prompt")
    if len(train_prompts) < prompts_per_batch * rt.world_size:  # a batch's prompts are distinct
        raise UserError(f"{data_path}: {len(train_prompts)} prompts, fewer than prompts_per_batch x processes = "
                         f"{prompts_per_batch * rt.world_size}; lower --prompts_per_batch or add prompts")

    tracker = monitors.Tracker(**(ckpt or {}).get("monitors", {}))
    monitors.check_stop(stop, watched, audit, monitor_judge, ("reward", "kl", "entropy", "response_len", "approx_kl",
                        "policy_loss", "ended") + (("train_gold",) if data_path == "builtin" else ()))

    # ----------------------------------------------------------------------------- optimizer
    optimizer = common.configure_optimizer(policy, lr, weight_decay)
    rng, iter_num = common.resume(ckpt, rt, seed, optimizer)  # the data order: the same on every rank
    raw_policy, policy = policy, common.wrap(policy, rt, compile)

    @torch.no_grad()
    def evaluate():
        """Held-out prompts: gold, parse, ended, response_len and the sequence KL to the reference; your prompts
        (--data_path): the first n_print, eval_repeats samples each, scored by --reward_fns (no gold)."""
        raw_policy.eval()  # rank 0 only: the raw model (DDP's forward would wait for the other ranks)
        with rt.ctx:
            texts, lengths, kls, rows = data.sample_responses(raw_policy, tok, eval_prompts, max_new_tokens,
                                                              temperature, ref=ref, with_ids=True)
            same_vocab = rm is not None and all(p.same_vocab for p in rm.parts)
            ens = rm.ensemble_stats(rows, tok.eot) if same_vocab else {}
        if data_path == "builtin":
            out = {**ens, **task.report(eval_prompts, texts, lengths, kls)}
        else:
            total, each = rewards.score(scorers, eval_prompts, texts, rows)
            out = {"reward": total.mean().item(), **{f"reward/{k}": v.mean().item() for k, v in each.items()}, **ens,
                   "response_len": sum(lengths) / len(lengths), "kl": sum(kls) / len(kls) if kls else 0.0}
        for p, r in list(zip(eval_prompts, texts))[::1 if data_path == "builtin" else eval_repeats][:n_print]:
            print(f"  {p!r} -> {r!r}" + (f"  gold {task.gold(p, r):+.2f}" if data_path == "builtin" else ""))
        return out

    def rollout():
        """Sample G responses to each of prompts_per_batch prompts and score them (DDP: every world-th of one draw)."""
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
        reward, each = rewards.score(scorers, prompts, texts, ids)
        if overlong_cache:
            each["overlong"] = gv.overlong_penalty(lengths.cpu(), max_new_tokens, overlong_cache, overlong_penalty)
            reward = reward + each["overlong"]
        return roll, prompts, texts, ids, reward, each

    def sample_groups():
        """One round: rewards (groups, G) and the groups' G rows (prompt, prompt ids, response ids, text, reward, parts)."""
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
    t0, logs, kept = time.time(), [], []  # kept: --stop_on's states at the start of the last two batches
    while True:
        if common.eval_due(iter_num, eval_interval, max_iters, start_iter):
            common.evaluate_and_save(evaluate, out_dir, rt, iter_num, config, vocab, rng, raw_policy, optimizer,
                                     monitors=tracker.state())
        if iter_num >= max_iters:
            break
        if stop:
            kept = kept[-1:] + [common.snapshot(rt, iter_num, config, vocab, rng, raw_policy, optimizer,
                                                monitors=tracker.state())]
        common.set_lr(optimizer, common.cosine_lr(iter_num, lr, warmup_iters, max_iters))

        # rollout: a group is G consecutive rows
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

        # old log-probs, and the reference's log-probs or, for the full KL, its hidden states (B, N, C): no
        # reference logits are ever held. One path (response_logprobs) for all: the first ratio is exactly 1
        ref_logp = ref_hidden = None
        with torch.no_grad(), rt.ctx:
            old_logp, _ = response_logprobs(raw_policy, tokens, attn, labels, temperature, fused_lm_head)
            if ref is not None and (kl_estimator != "full" or kl_in == "reward"):
                ref_logp, _ = response_logprobs(ref, tokens, attn, labels, temperature, fused_lm_head)
            elif ref is not None:
                ref_hidden = ref(tokens[:, :-1], attn[:, :-1], hidden=True)[:, P - 1:]
        # the sampler's log-probs against the update's forward (not under dynamic sampling: re-padded rows)
        mismatch = common.mismatch_kl(roll["logprobs"], old_logp, mask) if "logprobs" in roll else None
        # --kl_in=reward: the k1 penalty is part of the reward before any baseline sees it
        kl_reward = ref is not None and kl_in == "reward"
        if advantage in ("reinforce", "reinforce_baseline"):  # REINFORCE++: per token, whitened over the batch
            kl_return = gv.kl_reward_to_go(old_logp, ref_logp, mask, kl_coef) if kl_reward else None
            adv = gv.reinforce_pp_advantages(groups, mask, advantage == "reinforce_baseline", kl_return)
        else:  # one advantage per response, on every one of its tokens
            if reward_agg == "gdpo":  # each reward on its own (overlong, when on, is one more of weight 1)
                parts = [(each[n], w) for n, _, w in scorers] + ([(each["overlong"], 1.0)] if overlong_cache else [])
                adv = gv.gdpo_advantages(torch.stack([r for r, _ in parts]).view(len(parts), *groups.shape),
                                         [w for _, w in parts])
            else:
                penalised = gv.kl_penalised_rewards(groups, old_logp, ref_logp, mask, kl_coef) if kl_reward else groups
                adv = group_advantages(penalised, advantage)
            adv = adv.view(-1).to(rt.device)

        policy.train()
        stats = {k: [] for k in ("policy_loss", "kl", "entropy", "clipfrac_low", "clipfrac_high", "approx_kl")}
        kl_check = []  # every KL estimator against the exact KL, on each epoch's first minibatch (8 rows)
        for epoch in range(ppo_epochs):
            for k, idx in enumerate(torch.randperm(n_responses).split(minibatch_size)):
                m = mask[idx]
                if k == 0 and ref is not None:
                    r = idx[:8]
                    kl_check.append((epoch, kl_estimators.check(raw_policy, ref, tokens[r], attn[r], labels[r],
                                                                old_logp[r], temperature)))
                ref_arg = None if ref_hidden is None else (ref_hidden[idx], ref.lm_head.weight)
                with rt.ctx:
                    out = response_logprobs(policy, tokens[idx], attn[idx], labels[idx], temperature, fused_lm_head,
                                            ref_arg)
                logp, ent = out[0], out[1]
                kl_tok = None
                if ref is not None and kl_in == "reward" and epoch == 0:  # the k1 penalty the reward carried
                    stats["kl"].append((((old_logp[idx] - ref_logp[idx]) * m).sum(1)).mean().item())
                if ref is not None and kl_in == "loss":  # k3 = r - 1 - log r >= 0 (Schulman 2020), a variant or exact
                    if kl_estimator == "full":
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

        row = {"reward": reward.mean().item(), "reward_std": reward.std().item(),
               **{f"reward/{k}": v.mean().item() for k, v in each.items()},
               "zero_std_frac": (groups.double().std(1) < ZERO_STD).float().mean().item() if ds is None else
                                ds["zero_std"] / ds["groups"],  # (dynamic sampling: of all groups sampled)
               **({} if ds is None else {"gen_batches": ds["rounds"], "filled_groups": ds["filled"]}),
               **{k: sum(v) / len(v) for k, v in stats.items() if v},
               "response_len": lengths.float().mean().item(),
               "ended": sum(t.endswith(data.EOT_TEXT) for t in texts) / len(texts),
               **({} if mismatch is None else {"mismatch_kl": mismatch.item()}),
               **kl_estimators.summary(kl_check)}
        if data_path == "builtin" and "gold" not in each:  # train_gold: "gold" alone is the held-out eval
            row["train_gold"] = sum(rewards.gold_reward(prompts, texts)) / len(texts)
        rm_score = each["rm"].to(tokens.device) if watched is not None else None  # (no gold: this batch's samples)
        row.update(monitors.batch_monitors(tracker, watched, audit, tokens, attn, rm_score, row.get("kl", 0.0),
                                           row["entropy"], row["response_len"], mjudge, prompts, texts))
        logs.append(row)
        if monitors.alarm(stop, row, rt):  # the policy that sampled this batch hacks: keep the one before it
            monitors.stop_run(out_dir, rt, kept, stop, iter_num, row)
            break
        if iter_num % log_interval == 0 and rt.master:
            keys = dict.fromkeys(k for r in logs for k in r)  # (judge_agree: absent from a batch without a pair)
            avg = {k: sum(r[k] for r in logs if k in r) / sum(k in r for r in logs) for k in keys}
            avg["clipfrac"] = avg["clipfrac_low"] + avg["clipfrac_high"]
            log_metrics(rt.metrics_path, {"iter": iter_num, **avg, "lr": optimizer.param_groups[0]["lr"],
                                       "s_per_iter": (time.time() - t0) / len(logs)})
            t0, logs = time.time(), []
        elif iter_num % log_interval == 0:
            logs = []
    common.finish(rt)
