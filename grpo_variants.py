"""
grpo_variants.py: the rest of the GRPO family, as small pure functions that grpo.py switches on by flag.

grpo.py holds GRPO itself (group advantages, PPO's clipped surrogate, loss aggregation, k3 / exact KL);
this file holds the variants the peers ship beside it, one function each, with the paper and the flag:

    gspo_policy_loss        --objective=gspo        sequence-level ratio and clip (GSPO, Zheng et al. 2025)
    cispo_policy_loss       --objective=cispo       clipped, stop-gradient IS weight on REINFORCE (CISPO,
                                                    MiniMax-M1, 2025)
    reinforce_pp_advantages --advantage=reinforce   global-batch baseline and normalisation (REINFORCE++,
                            --advantage=reinforce_baseline   Hu 2025; OpenRLHF's two estimators)
    kl_reward_to_go         --kl_in=reward          k1 KL in the reward, summed to the end (PPO-style RLHF)
    kl_k3_plus              --kl_estimator=k3+      k3's value with k2's gradient (verl)
    kl_k3_corrected         --kl_estimator=k3_corrected  k3 weighted by pi / pi_old (DeepSeek-V3.2; TRL's
                                                    use_bias_correction_kl)
    overlong_penalty        --overlong_cache=L      DAPO's soft overlong punishment (Yu et al. 2025)
    dynamic_sampling        --dynamic_sampling      DAPO's dynamic sampling: drop all-equal groups, sample
                                                    more (Yu et al. 2025)
    pad_rollout             (dynamic sampling)      re-pad the kept groups into generate()'s layout

They live in their own file only to keep grpo.py near the guide's ~400 lines; each is called from one
place in grpo.py's loop. Shapes: B responses, N response tokens, G responses per group.
"""
import torch

import kernels


# ----------------------------------------------------------------------------- policy objectives
def gspo_policy_loss(logp, old_logp, adv, mask, clip_low=3e-4, clip_high=4e-4):
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", eq. 5-7): one importance ratio per
    response, s = exp(mean_t (logp - old_logp)) (the length-normalised sequence likelihood ratio), and
    PPO's clip applied to s: loss_i = -min(s_i A_i, clip(s_i, 1 - clip_low, 1 + clip_high) A_i).
    logp, old_logp (B, N), adv (B,) or (B, N) (a per-token advantage uses the sequence's s at every
    token), mask (B, N). Returns the per-token loss (B, N) (each response's loss on its every token:
    --loss_agg=seq then gives GSPO's mean over responses exactly, as TRL's importance_sampling_level=
    "sequence" does) and the (B, N) masks of tokens whose gradient the clip cuts (low, high).
    The paper's clip range is tiny (3e-4, 4e-4): a mean log-ratio moves far less than a token's."""
    m = mask.float()
    log_s = ((logp - old_logp) * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    s = log_s.exp().expand_as(logp)
    adv = (adv[:, None] if adv.dim() == 1 else adv).expand_as(logp)
    loss = -torch.min(s * adv, s.clamp(1 - clip_low, 1 + clip_high) * adv)
    return loss, (s < 1 - clip_low) & (adv < 0), (s > 1 + clip_high) & (adv > 0)


def cispo_policy_loss(logp, old_logp, adv, clip_low=1.0, clip_high=4.0):
    """CISPO (MiniMax-M1, 2025, eq. 4-5): REINFORCE weighted by a clipped, stop-gradient importance
    weight, loss_t = -sg(clip(r_t, 1 - clip_low, 1 + clip_high)) A log pi(y_t), r_t = pi / pi_old.
    Unlike PPO's clip, which zeroes the gradient of a token whose ratio left the band, every token
    keeps a gradient, only its weight is capped. MiniMax sets no lower bound (clip_low=1: weight >= 0)
    and tunes the upper one; ScaleRL's and TRL's recommended cap is a weight of 5 (clip_high=4).
    logp, old_logp (B, N), adv (B,) or (B, N). Returns the per-token loss (B, N) (its value is not the
    surrogate's: -w A log pi; only its gradient, -w A grad log pi, means anything) and the masks of
    tokens whose weight was capped below (r < 1 - clip_low) and above (r > 1 + clip_high)."""
    adv = adv[:, None] if adv.dim() == 1 else adv
    ratio = torch.exp(logp - old_logp).detach()
    w = ratio.clamp(1 - clip_low, 1 + clip_high)
    return -w * adv * logp, ratio < 1 - clip_low, ratio > 1 + clip_high


# ----------------------------------------------------------------------------- advantages
def masked_whiten(x, mask, eps=1e-8):
    """(x - mean) / std over the valid tokens of x (B, N) (population variance, as OpenRLHF); 0 where
    masked. Under DDP the statistics are over every rank's tokens (the global batch)."""
    m = mask.float()
    sums = torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()]).double()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    mean = sums[0] / sums[2].clamp(min=1)
    var = (sums[1] / sums[2].clamp(min=1) - mean ** 2).clamp(min=0)
    return ((x - mean.to(x.dtype)) * (var.clamp(min=eps).rsqrt()).to(x.dtype)) * m


def reinforce_pp_advantages(rewards, mask, baseline=False, kl_return=None, eps=1e-8):
    """REINFORCE++ (Hu 2025, "REINFORCE++: a simple and efficient approach for aligning large language
    models"), OpenRLHF's advantage_estimator 'reinforce' (baseline=False) and 'reinforce_baseline'
    (baseline=True). rewards (n_groups, G) scalar rewards (G consecutive responses per prompt), mask
    (B, N) with B = n_groups * G, kl_return (B, N) or None: the KL penalty's reward-to-go
    (kl_reward_to_go, with --kl_in=reward). Per token
        A_t = r - [group mean of r, if baseline] + kl_return_t,
    then whitened over the *global batch's* valid tokens (mean 0, std 1; token-weighted, as OpenRLHF).
    The baseline and scale come from the whole batch, not the group: a group whose rewards are all
    equal still gets a signal (its mean against the batch's) unless the group mean is subtracted.
    Returns (B, N), 0 at masked tokens."""
    r = rewards - rewards.mean(1, keepdim=True) if baseline else rewards
    a = r.reshape(-1, 1).to(mask.device).expand(mask.shape).float()
    if kl_return is not None:
        a = a + kl_return
    return masked_whiten(a, mask, eps)


# ----------------------------------------------------------------------------- KL variants
def kl_reward_to_go(old_logp, ref_logp, mask, coef):
    """--kl_in=reward: the KL penalty as a per-token reward, -coef * k1_t with k1_t = log pi_old(y_t) -
    log pi_ref(y_t) at the sampled token (as PPO-style RLHF: Ziegler et al. 2019, Ouyang et al. 2022;
    REINFORCE++), summed from each token to the end (gamma = 1: the reward-to-go a REINFORCE advantage
    sees). old_logp, ref_logp, mask (B, N) -> (B, N), 0 at masked tokens. No gradient flows: the KL
    shapes the advantage, it is not a loss term."""
    k1 = (old_logp - ref_logp).detach() * mask.float()
    return -coef * k1.flip(1).cumsum(1).flip(1) * mask.float()


def kl_k3_plus(logp, ref_logp):
    """verl's "k3+" (a kl_loss_type ending in "+" is straight-through): k3's value, r - 1 - log r with
    r = p_ref / p (unbiased for KL(p || p_ref), >= 0), but k2's gradient, d/dlogp (log p - log p_ref)^2
    / 2 = log(p / p_ref), whose expectation under p is the true gradient of KL(p || p_ref); k3's own
    gradient, (1 - r), is in expectation that of KL(p_ref || p) (Tang & Munos 2025). k2 + sg(k3 - k2).
    logp, ref_logp (B, N) -> (B, N)."""
    k2 = kernels.kl_estimate(logp, ref_logp, kind="k2")
    k3 = kernels.kl_estimate(logp, ref_logp, kind="k3")
    return k2 + (k3 - k2).detach()


def kl_k3_corrected(logp, old_logp, ref_logp):
    """The bias-corrected k3 (DeepSeek-AI 2025, "DeepSeek-V3.2", the unbiased KL estimate; TRL's
    use_bias_correction_kl): k3 weighted by the importance ratio pi / pi_old, gradient through both.
    The tokens were sampled from pi_old, so the ratio makes the estimate unbiased for KL(pi || pi_ref) at
    the current policy, and its gradient is that of the true KL: at pi = pi_old it is
    d/dlogp [ratio * k3] = k3 + (1 - p_ref / p) = log(p / p_ref). logp, old_logp, ref_logp (B, N)."""
    return torch.exp(logp - old_logp) * kernels.kl_estimate(logp, ref_logp, kind="k3")


# ----------------------------------------------------------------------------- DAPO's sampling and shaping
def overlong_penalty(lengths, max_len, cache, factor=1.0):
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13): 0 for a response of up to max_len -
    cache tokens, then falling linearly to -factor at max_len tokens (and -factor beyond), added to the
    reward. lengths (B,) response tokens (the end token included); max_len: the generation limit
    (--max_new_tokens); cache: L_cache, the length of the soft band. Returns (B,) float."""
    if not 0 < cache <= max_len:
        raise ValueError(f"overlong_cache {cache} must be in 1..max_new_tokens ({max_len})")
    over = (lengths.float() - (max_len - cache)) / cache
    return -factor * over.clamp(0, 1)


def dynamic_sampling(sample_round, n_groups, max_rounds, more=None, eps=1e-6):
    """DAPO's dynamic sampling (Yu et al. 2025, section 3.2): a group whose rewards are all equal has
    advantage 0 and teaches nothing, so drop it and sample more prompts until n_groups groups with
    different rewards are kept. sample_round() -> (rewards (k, G), records: k per-group objects) draws
    and scores one round. At most max_rounds rounds (DAPO's max_num_gen_batches); if they do not
    fill the batch, the rest is filled with dropped groups (they still carry the KL term) and counted
    in `filled`, where DAPO's code raises. more(need) -> bool lets DDP ranks agree to keep sampling while
    any rank still needs groups. Returns (n_groups records, stats: rounds, groups sampled, zero_std
    groups seen, filled)."""
    kept, dropped, stats = [], [], {"rounds": 0, "groups": 0, "zero_std": 0, "filled": 0}
    while True:
        rewards, records = sample_round()
        stats["rounds"] += 1
        for r, rec in zip(rewards, records):
            stats["groups"] += 1
            if r.double().std() < eps:  # (fp64, as grpo.group_advantages: equal rewards read as equal)
                stats["zero_std"] += 1
                dropped.append(rec)
            else:
                kept.append(rec)
        need = len(kept) < n_groups
        if more is not None:
            need = more(need)
        if not need or stats["rounds"] >= max_rounds:
            break
    stats["filled"] = max(0, n_groups - len(kept))
    return (kept + dropped[:stats["filled"]])[:n_groups], stats


def pad_rollout(prompt_ids, response_ids, pad):
    """Lists of B prompt and response token-id lists -> the layout model.generate returns: tokens
    (B, P + N) with prompts left-padded to P and responses right-padded to N with `pad` (the end token,
    as generate), attention_mask (B, P + N), response_mask (B, N), prompt_len P."""
    B, P, N = len(prompt_ids), max(map(len, prompt_ids)), max(map(len, response_ids))
    tokens = torch.full((B, P + N), pad, dtype=torch.long)
    attn = torch.zeros(B, P + N, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        tokens[i, P - len(p):P], attn[i, P - len(p):P] = torch.tensor(p, dtype=torch.long), True
        tokens[i, P:P + len(r)], attn[i, P:P + len(r)] = torch.tensor(r, dtype=torch.long), True
    return dict(tokens=tokens, attention_mask=attn, response_mask=attn[:, P:], prompt_len=P)
