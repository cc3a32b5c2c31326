"""
reward_losses.py (goldRLHF): reward.py's losses, one per shape of feedback, and the held-out metrics of thumbs;
pure functions on reward tensors (r: the scalar head's raw reward, its bias included).
"""
import math

import torch
import torch.nn.functional as F


def bt_loss(r_chosen, r_rejected, margin=None):
    """-log sigmoid(r+ - r- [- margin]), mean over B; with a margin (B,), Llama 2's eq. 2."""
    d = r_chosen - r_rejected - (0.0 if margin is None else margin)
    return -F.logsigmoid(d).mean()


def soft_bt_loss(r_chosen, r_rejected, p_chosen):
    """Cross-entropy against q = p_chosen (B,), the annotators' share: a 2-1 vote asks for P = 2/3, not 1."""
    d = r_chosen - r_rejected
    return -(p_chosen * F.logsigmoid(d) + (1 - p_chosen) * F.logsigmoid(-d)).mean()


def hinge_loss(r_chosen, r_rejected, margin=1.0):
    return F.relu(margin - (r_chosen - r_rejected)).mean()


def plackett_luce_loss(r, mask=None):
    """r, mask (B, K) best first, padded at the end: -log P = sum_k [logsumexp(r_k..r_K) - r_k]."""
    mask = torch.ones_like(r, dtype=torch.bool) if mask is None else mask
    r = r.masked_fill(~mask, float("-inf"))
    suffix = torch.logcumsumexp(r.flip(-1), -1).flip(-1)  # logsumexp over positions k..K
    return (suffix - r).masked_fill(~mask, 0.0).sum(-1).mean()


def all_pairs_loss(r, mask=None):
    """Bradley-Terry on every pair of a ranking (InstructGPT's eq. 1): r, mask (B, K) best first."""
    mask = torch.ones_like(r, dtype=torch.bool) if mask is None else mask
    i, j = torch.triu_indices(r.shape[1], r.shape[1], offset=1)  # i ranked above j
    ok = mask[:, i] & mask[:, j]
    return -(F.logsigmoid(r[:, i] - r[:, j]) * ok).sum() / ok.sum().clamp(min=1)


def rao_kupper_loss(r_a, r_b, tie, alpha):
    """d = r_a - r_b (a chosen unless tied), alpha >= 0 learned: P(a > b) = sigmoid(d - alpha), P(b > a) =
    sigmoid(-d - alpha), P(tie) the rest = (e^(2 alpha) - 1) sigmoid(d - alpha) sigmoid(-d - alpha)."""
    d = r_a - r_b
    log_win = -F.softplus(alpha - d)
    log_tie = 2 * alpha + torch.log(-torch.expm1(-2 * alpha).clamp(max=-1e-12)) \
        - F.softplus(alpha - d) - F.softplus(alpha + d)
    return -torch.where(tie, log_tie, log_win).mean()


def mse_loss(r, score, lo=1, hi=5):
    """Regression on the centred rating: mean (r - (2 (score - lo) / (hi - lo) - 1))^2, score (B,) any float in
    [lo, hi] (1 -> -1, 3 -> 0, 5 -> 1)."""
    return F.mse_loss(r, 2 * (score.float() - lo) / (hi - lo) - 1)


def ordinal_loss(r, score, cuts):
    """P(score <= k) = sigmoid(c_k - r), cuts c (L-1,) increasing, c_0 = -inf, c_L = inf; score (B,) in 1..L,
    a float one binned to the nearest level (floor(score + 0.5): 2.5 -> 3, 4.4 -> 4)."""
    inf = torch.tensor([float("inf")], device=r.device)
    c = torch.cat([-inf, cuts, inf])
    k = torch.floor(score.float() + 0.5).long().clamp(1, len(cuts) + 1)
    upper, lower = torch.sigmoid(c[k] - r), torch.sigmoid(c[k - 1] - r)
    return -torch.log((upper - lower).clamp(min=1e-12)).mean()


def ordinal_cuts(raw):
    """Strictly increasing cuts from any raw (L-1,): c_1 = raw_1, c_k = c_1 + sum_{1<j<=k} softplus(raw_j)."""
    return torch.cat([raw[:1], raw[:1] + F.softplus(raw[1:]).cumsum(0)])


def ordinal_init(levels=5, spacing=1.0):
    """raw whose cuts are evenly spaced around 0 ([-1.5, -0.5, 0.5, 1.5]): a reward of 0 spreads over all levels."""
    first = -spacing * (levels - 2) / 2
    return torch.tensor([first] + [math.log(math.expm1(spacing))] * (levels - 2))  # softplus^-1(spacing)


def thumbs_loss(r, up):
    """Thumbs up / down as a classifier (Sparrow's rule models, Glaese et al. 2022; unpaired feedback, KTO,
    Ethayarajh et al. 2024): P(up) = sigmoid(r), the head's bias as the offset; r (B,), up (B,) 0/1.
    Loss: -mean[up log sigmoid(r) + (1 - up) log sigmoid(-r)]."""
    return F.binary_cross_entropy_with_logits(r, up.float())


def auc(score, up):
    """Area under the ROC curve of score (N,) against 0/1 labels up (N,): P(a random up scores above a random
    down), ties 1/2 (Mann-Whitney U / (n_up n_down)). nan without both labels."""
    pos, neg = score[up.bool()], score[~up.bool()]
    if not len(pos) or not len(neg):
        return float("nan")
    d = pos[:, None] - neg[None, :]
    return ((d > 0).float() + 0.5 * (d == 0).float()).mean().item()
