"""
ppo.py (goldRLHF): RLHF with PPO (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022, step 3).
The implementation details of Huang et al. 2024 ("The N+ Implementation Details of RLHF with PPO") are tagged
[detail]: mostly OpenAI's lm-human-preferences'; where we follow TRL's PPOTrainer instead, or depart from
both, the comment says so. One iteration:
  1. rollout: a response per prompt from the policy (KV-cached, stops at <|endoftext|>)
  2. score:   the RM's score at the last token (-1 if it never ends); per-token KL penalty -beta * KL(pi || ref)
  3. GAE:     advantages by a reversed loop over time, returns = advantages + values, whitening
  4. update:  ppo_epochs over shuffled minibatches: clipped policy and value losses, entropy bonus, grad clip
  5. beta:    fixed, or Ziegler et al.'s proportional controller toward target_kl
The policy (from SFT) and a critic train, the reference (SFT) and RM stay frozen. Writes out_dir/ckpt.pt.

    python sft.py && python feedback.py && python reward.py && python ppo.py     # built-in task
    python ppo.py --beta=0 --adaptive_kl=False              # no KL penalty: watch the policy hack the RM
    python ppo.py --reward_ensemble=worst --reward_path=out/ensemble   # its worst case (Coste et al. 2023)
    python ppo.py --beta=0 --adaptive_kl=False --stop_on=kl_rate>0.5     # stop when a monitor warns (monitors.py)
    torchrun --nproc_per_node=2 ppo.py                      # DDP (batch_size is per process)

Departures from lm-human-preferences: a separate critic (from the RM, own optimizer: TRL; Huang et al.'s TL;DR),
not a value head on the policy; rewards not whitened by default (RESULTS.md 2.5); a constant lr. One call
(response_logprobs), dropout 0, gives every log-prob a ratio or KL compares: first ratio 1, first KL 0, exactly.
"""
import time

import torch

import common
import data
import kernels
import kl_estimators
import monitors
import task
from common import log_metrics, masked_whiten
from configurator import configure
from model import disable_dropout, last_index, response_logprobs
from rewards import load_reward_models

# ----------------------------------------------------------------------------- config
out_dir = "out/ppo"  # checkpoint, metrics.jsonl go here
init_from = "sft"  # 'sft' (policy starts as sft_path) or 'resume' (continue from out_dir/ckpt.pt)
overwrite = False  # replace what an earlier run left in out_dir: its checkpoint, metrics.jsonl (a fresh run refuses to)
sft_path = "out/sft/ckpt.pt"  # SFT checkpoint: the policy's start and the frozen reference
reward_path = "out/reward/ckpt.pt"  # reward model checkpoint (reward.py), frozen; or one per aspect, comma-separated
reward_ensemble = "mean"  # an ensemble RM (reward.py --ensemble=K): 'mean', 'worst' (min over members) or 'uncertainty'
uncertainty_coef = 1.0  # --reward_ensemble=uncertainty: the reward is mean - uncertainty_coef * std over members [>= 0]
aspect_weights = ""  # several RMs: their scores' weights, 'faithfulness:1,recommendation:0.5' or '1,0.5' ('' all 1)
critic_init = "reward"  # critic starts from the 'reward' model (TRL, Huang et al. 2024's TL;DR [detail]) or 'sft'
data_path = "builtin"  # 'builtin' (the review task's train prompts) or a JSONL file of {"prompt"} rows
template = "plain"  # prompt template for JSONL prompts: 'plain' or 'instruction'
# rollout
batch_size = 64  # prompts (= responses) per rollout, per process [> 0]
max_new_tokens = 40  # response length limit [> 0]
temperature = 1.0  # sampling temperature; the same temperature scales the logits in the update [detail] [> 0]
unended_penalty = True  # a response that never emits <|endoftext|> gets unended_score instead of the RM's [detail]
unended_score = -1.0  # the score of such a response (OpenAI's -1) [any]
# rewards
beta = 0.2  # KL penalty coefficient, initial value when adaptive (0.05 let PPO hack the reward model) [>= 0]
kl_estimator = "k1"  # per-token KL in the reward: 'k1' (log p - log p_ref, as the papers) or 'k3'
adaptive_kl = True  # Ziegler et al.'s proportional controller moves beta toward target_kl
target_kl = 2.0  # target sequence KL (nats) for the adaptive controller [> 0]
kl_horizon = 640  # controller horizon in samples (Ziegler et al.: 10000; here runs are 20 iterations) [> 0]
whiten_rewards = False  # scale the per-token rewards to std 1 over the batch before GAE (lm-human-preferences: on)
score_clip = 0.0  # clip the RM score to [-score_clip, score_clip] (0: off) [>= 0]
# advantages
gamma = 1.0  # discount [>= 0, <= 1]
lam = 0.95  # GAE lambda [>= 0, <= 1]
# update
ppo_epochs = 4  # passes over each rollout batch [> 0]
n_minibatches = 4  # minibatches per pass (shuffled every pass) [> 0, divides batch_size]
lr = 3e-5  # policy learning rate, constant (lm-human-preferences decays it linearly to 0) [> 0]
critic_lr = 1e-4  # critic learning rate [> 0]
clip_range = 0.2  # policy ratio clip epsilon [> 0]
clip_range_value = 0.2  # value clip: new values stay within this of the rollout's values [> 0]
ent_coef = 0.0  # entropy bonus coefficient (OpenAI used 0) [>= 0]
grad_clip = 1.0  # clip each model's gradient norm (0: off) [>= 0]
max_iters = 20  # PPO iterations (rollout + update); 20 keeps demo.sh within 5 minutes (RESULTS 1) [> 0]
# eval and logging
eval_interval = 10  # eval on held-out prompts every this many iterations [> 0]
eval_repeats = 4  # responses per held-out prompt at eval [> 0]
n_print = 3  # samples printed at each eval [>= 0]
# reward-hacking monitors (monitors.py: no gold, on every rollout batch, logged as monitor/...)
audit_path = ""  # a held-out audit reward model (reward.py --half=2; reward_path: --half=1): monitor/audit_gap ('' none)
stop_on = ""  # end at the first batch whose NAME>X (or <X): 'audit_gap>0.5', 'kl>4'; keeps the checkpoint before it
# runtime
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank) [>= 0]
compile = False  # torch.compile the policy and critic
fused_lm_head = False  # policy and reference log-probs from hidden states, no logits (kernels.linear_logprobs_entropy)

# ----------------------------------------------------------------------------- the pieces of PPO
def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def final_scores(score, response_tokens, eot, unended_score=None, score_clip=0.0):
    """(scores (B,), ended (B,) bool): the RM's score, or unended_score (None: no penalty) for a response whose
    tokens (B, N) never contain <|endoftext|> [detail], clipped to [-score_clip, score_clip] (0: off)."""
    ended = (response_tokens == eot).any(1)  # generate keeps <|endoftext|> as a response's last real token
    if unended_score is not None:
        score = torch.where(ended, score, torch.full_like(score, unended_score))
    if score_clip > 0:
        score = score.clamp(-score_clip, score_clip)
    return score, ended


def kl_rewards(score, logp, ref_logp, mask, beta, kind="k1"):
    """Ziegler et al. eq. 2 as per-token rewards: r_t = -beta * kl_t, plus the RM score at the last
    response token. score (B,), logp / ref_logp / mask (B, N). Returns (rewards, kl) both (B, N)."""
    kl = kernels.kl_estimate(logp, ref_logp, kind) * mask
    rewards = -beta * kl
    rewards[torch.arange(len(score), device=score.device), last_index(mask)] += score
    return rewards, kl


def gae(rewards, values, mask, gamma, lam):
    """GAE (Schulman et al. 2016): A_t = delta_t + gamma lam A_{t+1}, delta_t = r_t + gamma V_{t+1} - V_t (V = 0
    after the last token); all (B, N), mask a prefix of each row. Returns (advantages, returns = A + V), 0 masked."""
    rewards, values = rewards * mask, values * mask
    N = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_adv, next_value = torch.zeros_like(rewards[:, 0]), torch.zeros_like(values[:, 0])
    for t in reversed(range(N)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + gamma * lam * next_adv
        advantages[:, t] = next_adv
        next_value = values[:, t]
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logp, old_logp, advantages, mask, clip_range):
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A), a
    token-level mean [detail]. Returns (loss, clipfrac, approx_kl): the k3 estimate of KL(old || new) (Schulman
    2020), as grpo.py logs it (lm-human-preferences logs k2, 0.5 (log ratio)^2)."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range) * advantages
    loss = -masked_mean(torch.min(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped < unclipped).float(), mask)
    approx_kl = masked_mean(ratio - 1 - log_ratio, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def value_loss(values, old_values, returns, mask, clip_range_value):
    """Clipped value loss [detail]: 0.5 * max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def update_beta(beta, kl, target_kl, n_samples, horizon):
    """Ziegler et al. 2019's adaptive KL controller: beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_samples / horizon)."""
    error = min(max(kl / target_kl - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_samples / horizon)


def explained_variance(values, returns, mask):
    """1 - Var(R - V) / Var(R) over valid tokens: 1 is a perfect critic, <= 0 a useless one."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    err = returns - values
    var_e = masked_mean((err - masked_mean(err, mask)) ** 2, mask)
    return (1 - var_e / var_r.clamp(min=1e-8)).item()


if __name__ == "__main__":
    config = configure(globals(), choices=dict(kl_estimator=("k1", "k3"), critic_init=("reward", "sft"),
                                               init_from=("sft", "resume"), template=("plain", "instruction"),
                                               reward_ensemble=("mean", "worst", "uncertainty")))
    stop = monitors.parse_stop(stop_on)
    rt = common.setup(device, dtype, seed, out_dir, config, ("sft_path", "reward_path", "data_path", "audit_path"))

    # ----------------------------------------------------------------------------- 1. models
    ckpt = common.load_checkpoint(out_dir) if init_from == "resume" else None
    policy, vocab, _ = common.load_model(out_dir if ckpt else sft_path)
    ref = common.load_frozen(sft_path, vocab, "reference", rt.device)[0]
    rm = load_reward_models(reward_path, vocab, rt.device, aspect_weights, objective=reward_ensemble,
                             coef=uncertainty_coef)  # normalised on SFT samples [detail]
    audit = monitors.load_aside(load_reward_models, audit_path, vocab, rt.device) if audit_path else None
    # (several reward models, one per aspect: the critic starts from the first)
    critic, _, _ = common.load_model(rm.path if critic_init == "reward" else sft_path, scalar_head=True)
    if ckpt:
        critic.load_state_dict(ckpt["critic"])
    tok = data.Tokenizer(vocab)
    for m in (policy, critic):
        m.to(rt.device)
        if disable_dropout(m) and rt.master:
            print("note: dropout set to 0 (rollout and update, policy and reference must be the same function)")

    # ----------------------------------------------------------------------------- data
    if data_path == "builtin":
        train_prompts, eval_prompts = task.prompts("train"), task.prompts("test")
        where = "the built-in task's prompt"
    else:
        train_prompts, where = data.load_prompts(data_path, template, lines=True)  # (where: each one's file:line)
        eval_prompts = train_prompts[:n_print]  # your prompts: no held-out split, no gold; the RM's reward on a few
    contexts = {"policy": policy.config.block_size, "reference": ref.config.block_size, "reward model": rm.block_size,
                "critic": critic.config.block_size, **({"audit model": audit.block_size} if audit else {})}
    max_prompt = data.prompt_room(max_new_tokens, contexts)
    train_ids = data.encode_prompts(tok, train_prompts, max_prompt, where)
    if data_path == "builtin":  # (your eval prompts are among the train prompts: checked above)
        data.encode_prompts(tok, eval_prompts, max_prompt, "the built-in task's test prompt")
    tracker = monitors.Tracker(**(ckpt or {}).get("monitors", {}))
    monitors.check_stop(stop, rm, audit, False, ("reward", "kl", "entropy", "response_len", "approx_kl", "clipfrac",
                        "policy_loss", "value_loss", "ended", "beta") + (("gold",) if data_path == "builtin" else ()))

    # ----------------------------------------------------------------------------- optimizers
    optimizer = common.configure_optimizer(policy, lr)
    critic_optimizer = common.configure_optimizer(critic, critic_lr)
    rng, iter_num = common.resume(ckpt, rt, seed, optimizer)  # the data order: the same on every rank
    kl_coef = beta  # the KL coefficient in use: the adaptive controller moves it (the config keeps the start)
    if ckpt:
        critic_optimizer.load_state_dict(ckpt["critic_optimizer"])
        kl_coef = ckpt["beta"]
    raw_policy, raw_critic = policy, critic
    policy, critic = common.wrap(policy, rt, compile), common.wrap(critic, rt, compile)

    @torch.no_grad()
    def evaluate():
        """Held-out prompts' gold, parse, KL to the reference and RM score (your prompts: the RM score, KL, length)."""
        raw_policy.eval()  # rank 0 only: raw models, a DDP forward would wait for the other ranks
        prompts = eval_prompts * eval_repeats
        with rt.ctx:
            texts, lengths, kls, rows = data.sample_responses(raw_policy, tok, prompts, max_new_tokens, temperature,
                                                              ref=ref, with_ids=True)  # the RM scores the sampled ids
            reward = rm.score(rows, tok.eot).mean().item()
        for p, t in list(zip(prompts, texts))[:n_print]:
            print(f"  {p!r} -> {t!r}" + (f"  gold {task.gold(p, t):+.2f}" if data_path == "builtin" else ""))
        raw_policy.train()
        with rt.ctx:  # an ensemble: its members' spread on these samples, and their mean score
            ens = rm.ensemble_stats(rows, tok.eot)
        if data_path != "builtin":
            return {"split": "train_prompts", "reward": reward, **ens, "kl": sum(kls) / len(kls),
                    "response_len": sum(lengths) / len(lengths)}
        return {"split": "test", "reward": reward, **ens, **task.report(prompts, texts, lengths, kls)}

    # ----------------------------------------------------------------------------- training loop
    start_iter = iter_num if ckpt else None
    kept = []  # --stop_on: the states at the start of the last two batches
    while True:
        state = lambda: dict(beta=kl_coef, critic=raw_critic.state_dict(), critic_optimizer=critic_optimizer.state_dict(),
                             monitors=tracker.state())
        if common.eval_due(iter_num, eval_interval, max_iters, start_iter):
            common.evaluate_and_save(evaluate, out_dir, rt, iter_num, config, vocab, rng, raw_policy, optimizer, **state())
        if iter_num >= max_iters:
            break
        if stop:
            kept = kept[-1:] + [common.snapshot(rt, iter_num, config, vocab, rng, raw_policy, optimizer, **state())]
        t0 = time.time()

        # ------------------------------------------------------------------------- 2. rollout
        picked = [rng.randrange(len(train_ids)) for _ in range(batch_size * rt.world_size)][rt.rank::rt.world_size]
        raw_policy.eval()
        with torch.no_grad(), rt.ctx:
            out = raw_policy.generate([train_ids[i] for i in picked], max_new_tokens, tok.eot, temperature)
        tokens, attn, mask, P = out["tokens"], out["attention_mask"], out["response_mask"], out["prompt_len"]
        labels = tokens[:, P:].masked_fill(~mask, -100)
        fmask = mask.float()

        # ------------------------------------------------------------------------- 3. rewards
        with torch.no_grad(), rt.ctx:
            # the update's own call, not the sampler's log-probs: the first ratio is exactly 1, the first KL 0
            # (the KV-cached sampler, or bf16 logits against the fused head's fp32 ones, differ by rounding)
            old_logp, _ = response_logprobs(raw_policy, tokens, attn, labels, temperature, fused_lm_head)
            ref_logp, _ = response_logprobs(ref, tokens, attn, labels, temperature, fused_lm_head)
            old_values = raw_critic(tokens, attn)[:, P - 1:-1].float() * fmask  # V of the state before token j
            score = rm(tokens, attn)  # normalised, at each sequence's last real token
        raw_score = score  # [detail] no <|endoftext|>: a fixed low score, whatever the RM says
        score, ended = final_scores(score, tokens[:, P:], tok.eot, unended_score if unended_penalty else None, score_clip)
        rewards, kl = kl_rewards(score, old_logp, ref_logp, fmask, kl_coef, kl_estimator)
        if whiten_rewards:
            rewards = masked_whiten(rewards, fmask, shift_mean=False)

        # ------------------------------------------------------------------------- 4. advantages
        advantages, returns = gae(rewards, old_values, fmask, gamma, lam)
        advantages = masked_whiten(advantages, fmask)  # [detail] over the valid tokens of all ranks

        # ------------------------------------------------------------------------- 5. update
        raw_policy.train()
        stats, kl_check = [], []  # kl_check: every KL estimator against the exact KL (each epoch's first 8 rows)
        mb = batch_size // n_minibatches
        for epoch in range(ppo_epochs):
            perm = torch.randperm(batch_size, device=tokens.device)  # fresh shuffle every epoch [detail]
            for k in range(n_minibatches):
                i = perm[k * mb:(k + 1) * mb]
                if k == 0:
                    kl_check.append((epoch, kl_estimators.check(raw_policy, ref, tokens[i[:8]], attn[i[:8]],
                                                                labels[i[:8]], old_logp[i[:8]], temperature)))
                with rt.ctx:
                    logp, ent = response_logprobs(policy, tokens[i], attn[i], labels[i], temperature, fused_lm_head)
                    values = critic(tokens[i], attn[i])[:, P - 1:-1].float()
                pg_loss, clipfrac, approx_kl = policy_loss(logp, old_logp[i], advantages[i], fmask[i], clip_range)
                entropy = masked_mean(ent, fmask[i])
                vf_loss = value_loss(values, old_values[i], returns[i], fmask[i], clip_range_value)
                # two separate models, two optimizers: one backward fills both sets of gradients
                loss = pg_loss - ent_coef * entropy + vf_loss
                if not torch.isfinite(loss):
                    raise RuntimeError(f"iter {iter_num}: PPO loss is {loss.item()}; lower --lr / --critic_lr, "
                                       f"or use --kl_estimator=k1 and --dtype=float32")
                loss.backward()
                common.optimizer_step(optimizer, policy, grad_clip)
                common.optimizer_step(critic_optimizer, critic, grad_clip)
                stats.append(torch.stack([pg_loss.detach(), vf_loss.detach(), entropy.detach(), clipfrac, approx_kl]))

        # ------------------------------------------------------------------------- 6. beta and logging
        n_tokens = mask.sum().item()
        seq_kl = kl.sum(1).mean()  # sequence KL (nats): the sum over response tokens, mean over responses
        pg, vf, ent, cf, akl = torch.stack(stats).mean(0).tolist()
        mismatch = common.mismatch_kl(out["logprobs"], old_logp, fmask)  # the sampler vs the update's forward
        rollout = torch.stack([seq_kl, raw_score.mean(), ended.float().mean(), fmask.sum(1).mean(), mismatch])
        if rt.ddp:  # every rank must use the same beta: average the rollout statistics
            torch.distributed.all_reduce(rollout, op=torch.distributed.ReduceOp.AVG)
        seq_kl, reward, frac_ended, response_len, mismatch = rollout.tolist()
        beta_used = kl_coef
        if adaptive_kl:
            kl_coef = update_beta(kl_coef, seq_kl, target_kl, batch_size * rt.world_size, kl_horizon)
        iter_num += 1
        line = {"iter": iter_num, "split": "train", "reward": reward}
        if data_path == "builtin":  # the hidden gold score of the rollout: monitoring only, never trained on
            texts = [tok.decode(r[:m]) for r, m in zip(tokens[:, P:].tolist(), mask.sum(1).tolist())]
            line["gold"] = sum(task.gold(train_prompts[i], t) for i, t in zip(picked, texts)) / batch_size
        line.update({"kl": seq_kl, "beta": beta_used, "entropy": ent, "policy_loss": pg, "value_loss": vf,
                     "clipfrac": cf, "approx_kl": akl,
                     "explained_variance": explained_variance(old_values, returns, fmask),
                     "response_len": response_len, "ended": frac_ended, "mismatch_kl": mismatch,
                     "tokens_per_s": rt.world_size * n_tokens / (time.time() - t0), **kl_estimators.summary(kl_check)})
        line.update(monitors.batch_monitors(tracker, rm, audit, tokens, attn, raw_score, seq_kl, ent, response_len))
        log_metrics(rt.metrics_path, line, rt.master)  # (the monitors: no gold, this batch's samples)
        if monitors.alarm(stop, line, rt):  # the policy that sampled this batch hacks: keep the one before it
            monitors.stop_run(out_dir, rt, kept, stop, iter_num)
            break
    common.finish(rt)
