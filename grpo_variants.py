"""
grpo_variants.py (goldRLHF): the rest of the GRPO family, one pure function per grpo.py flag (table: grpo.py).
"""
import torch

import kernels
from common import masked_whiten


# ----------------------------------------------------------------------------- policy objectives
def gspo_policy_loss(logp, old_logp, adv, mask, clip_low=3e-4, clip_high=4e-4):
    """GSPO (Zheng et al. 2025, eq. 5-7): PPO's clip on the sequence ratio s = exp(mean_t (logp - old_logp)),
    its loss on every token (--loss_agg=seq: GSPO's mean, as TRL). Returns loss, clip masks low / high (B, N)."""
    m = mask.float()
    log_s = ((logp - old_logp) * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    s = log_s.exp().expand_as(logp)
    adv = (adv[:, None] if adv.dim() == 1 else adv).expand_as(logp)
    loss = -torch.min(s * adv, s.clamp(1 - clip_low, 1 + clip_high) * adv)
    return loss, (s < 1 - clip_low) & (adv < 0), (s > 1 + clip_high) & (adv > 0)


def cispo_policy_loss(logp, old_logp, adv, clip_low=1.0, clip_high=4.0):
    """CISPO (MiniMax-M1 2025, eq. 4-5): -sg(clip(r_t, 1 - clip_low, 1 + clip_high)) A log pi(y_t): every token
    keeps a gradient, its weight capped (at 5: ScaleRL, TRL). Returns loss (only its gradient counts), cap masks."""
    adv = adv[:, None] if adv.dim() == 1 else adv
    ratio = torch.exp(logp - old_logp).detach()
    w = ratio.clamp(1 - clip_low, 1 + clip_high)
    return -w * adv * logp, ratio < 1 - clip_low, ratio > 1 + clip_high


# ----------------------------------------------------------------------------- advantages
def reinforce_pp_advantages(rewards, mask, baseline=False, kl_return=None):
    """REINFORCE++ (Hu 2025; OpenRLHF's two estimators): A_t = r [- group mean] + kl_return_t, whitened over the
    global batch's tokens. rewards (n_groups, G), mask, kl_return (B, N) -> (B, N)."""
    r = rewards - rewards.mean(1, keepdim=True) if baseline else rewards
    a = r.reshape(-1, 1).to(mask.device).expand(mask.shape).float()
    if kl_return is not None:
        a = a + kl_return
    return masked_whiten(a, mask)


def gdpo_advantages(each, weights, eps=1e-6, zero_std=1e-6):
    """GDPO (arXiv 2601.05242): each (K, n_groups, G) rewards, weights (K,) -> advantages (n_groups, G). Each
    reward is normalised within its group, (r_k - mean) / (std + eps) (0 where the group's std < zero_std),
    then A = sum_k w_k A_k is normalised over the batch (every DDP rank's). Normalising the weighted sum in
    its group instead maps distinct reward patterns with the same sums to one advantage."""
    r = each.double()
    std = r.std(2, keepdim=True)
    per = ((r - r.mean(2, keepdim=True)) / (std + eps)).masked_fill(std < zero_std, 0.0)
    a = (torch.as_tensor(weights, dtype=r.dtype, device=r.device).view(-1, 1, 1) * per).sum(0)
    mean, std = batch_mean_std(a)
    return ((a - mean) / (std + eps)).to(each.dtype)


def batch_mean_std(x):
    """The mean and unbiased std of every element of x over every DDP rank's x (the batch-level advantage
    scales: grpo.py's batch_* modes, GDPO)."""
    sums = torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), dtype=x.dtype, device=x.device)])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    total, sq, n = sums
    var = ((sq - total * total / n) / (n - 1).clamp(min=1)).clamp(min=0)
    return total / n, var.sqrt()


# ----------------------------------------------------------------------------- KL variants
def kl_penalised_rewards(rewards, old_logp, ref_logp, mask, coef):
    """--kl_in=reward for the group baselines: each response's reward minus coef x its summed k1 = log pi_old -
    log pi_ref, *before* the group statistics (verl: apply_kl_penalty, then the GRPO outcome advantage).
    rewards (n_groups, G); old_logp, ref_logp, mask (n_groups * G, N) -> (n_groups, G)."""
    k1 = ((old_logp - ref_logp).detach().double() * mask).sum(1).view(rewards.shape).to(rewards.device)
    return (rewards.double() - coef * k1).to(rewards.dtype)


def kl_reward_to_go(old_logp, ref_logp, mask, coef):
    """-coef x the reward-to-go of k1 = log pi_old - log pi_ref (Ziegler et al. 2019; Ouyang et al. 2022) (B, N)."""
    k1 = (old_logp - ref_logp).detach() * mask.float()
    return -coef * k1.flip(1).cumsum(1).flip(1) * mask.float()


def kl_k3_plus(logp, ref_logp):
    """verl's k3+: k2 + sg(k3 - k2), k3's value with k2's gradient, in expectation that of KL(p || p_ref)
    (k3's own is that of KL(p_ref || p), Tang & Munos 2025). (B, N) -> (B, N)."""
    k2 = kernels.kl_estimate(logp, ref_logp, kind="k2")
    k3 = kernels.kl_estimate(logp, ref_logp, kind="k3")
    return k2 + (k3 - k2).detach()


def kl_k3_corrected(logp, old_logp, ref_logp):
    """Bias-corrected k3 (DeepSeek-AI 2025, "DeepSeek-V3.2"; TRL's use_bias_correction_kl): (pi / pi_old) k3,
    unbiased for KL(pi || pi_ref) on tokens sampled from pi_old, with its true gradient. (B, N) -> (B, N)."""
    return torch.exp(logp - old_logp) * kernels.kl_estimate(logp, ref_logp, kind="k3")


# ----------------------------------------------------------------------------- DAPO's sampling and shaping
def overlong_penalty(lengths, max_len, cache, factor=1.0):
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13): 0 up to max_len - cache tokens, -factor at max_len."""
    if not 0 < cache <= max_len:
        raise ValueError(f"overlong_cache {cache} must be in 1..max_new_tokens ({max_len})")
    over = (lengths.float() - (max_len - cache)) / cache
    return -factor * over.clamp(0, 1)


def dynamic_sampling(sample_round, n_groups, max_rounds, more=None, eps=1e-6):
    """DAPO's dynamic sampling (Yu et al. 2025, 3.2): keep groups with unequal rewards from sample_round() -> (rewards
    (k, G), k records) until n_groups, for at most max_rounds; then fill with dropped ones (DAPO raises)."""
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
    """B prompt and response id lists -> model.generate's layout: tokens, attention_mask, response_mask, prompt_len."""
    B, P, N = len(prompt_ids), max(map(len, prompt_ids)), max(map(len, response_ids))
    tokens = torch.full((B, P + N), pad, dtype=torch.long)
    attn = torch.zeros(B, P + N, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        tokens[i, P - len(p):P], attn[i, P - len(p):P] = torch.tensor(p, dtype=torch.long), True
        tokens[i, P:P + len(r)], attn[i, P:P + len(r)] = torch.tensor(r, dtype=torch.long), True
    return dict(tokens=tokens, attention_mask=attn, response_mask=attn[:, P:], prompt_len=P)
