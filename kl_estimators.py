"""
kl_estimators.py (goldRLHF): on each update epoch's first minibatch, the exact KL(pi || ref) over the vocabulary
at every response position (sampled from pi_old), against k1 = log pi/ref, k2 = k1^2 / 2, k3 = r - 1 - log r
(r = ref/pi; Schulman 2020) and k3_is = (pi / pi_old) k3 (DeepSeek-V3.2) at the sampled tokens, and their
gradients in the logits against the exact KL's. Logged as kl_est/e1/... (pi = pi_old) and kl_est/e2+/...
"""
import torch
import torch.nn.functional as F

import grpo_variants
import kernels

ESTIMATORS = ("k1", "k2", "k3", "k3_is")


def estimates(logp, old_logp, ref_logp):
    """{name: (B, N)} per-token estimates from the sampled tokens' log-probs (B, N) under pi, pi_old, ref."""
    k = {kind: kernels.kl_estimate(logp, ref_logp, kind=kind) for kind in ("k1", "k2", "k3")}
    return {**k, "k3_is": grpo_variants.kl_k3_corrected(logp, old_logp, ref_logp)}


def compare(logits, ref_logits, labels, old_logp):
    """logits, ref_logits (B, N, V) / T, labels (B, N) (-100: none), old_logp (B, N) -> means of per-response sums:
    'exact', 'k3', its error's std 'k3_err_sd', its gradient's 'k3_grad_cos', 'k3_grad_ratio' (if KL > 1e-6)..."""
    mask = labels != -100
    z = logits.detach().float().requires_grad_(True)
    ref_logits = ref_logits.detach().float()
    logq = F.log_softmax(z, -1)
    logp = logq.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ref_logp = F.log_softmax(ref_logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    B = len(labels)
    seq = {"exact": (kernels.kl(z, ref_logits) * mask).sum(1)}
    seq.update({k: (v * mask).sum(1) for k, v in estimates(logp, old_logp.float(), ref_logp).items()})
    grads = {k: torch.autograd.grad(v.sum() / B, z, retain_graph=True)[0] for k, v in seq.items()}
    out = {"exact": seq["exact"].mean().item()}
    g0 = grads["exact"].flatten()
    for k in ESTIMATORS:
        err = (seq[k] - seq["exact"]).detach()
        g = grads[k].flatten()
        out[k] = seq[k].mean().item()
        out[f"{k}_err_sd"] = err.std().item() if B > 1 else 0.0
        if out["exact"] > 1e-6:  # (below, as while pi = ref in the first epoch, the directions are rounding)
            out[f"{k}_grad_cos"] = F.cosine_similarity(g, g0, dim=0).item()
            out[f"{k}_grad_ratio"] = (g.norm() / g0.norm()).item()
    return out


@torch.no_grad()
def response_logits(model, tokens, attention_mask, n, temperature=1.0):
    """The (B, n, V) fp32 logits / temperature that predict the last n tokens of `tokens` (B, T)."""
    x = model(tokens[:, :-1], attention_mask[:, :-1], hidden=True)[:, tokens.shape[1] - 1 - n:]
    raw = getattr(model, "module", model)  # DDP -> the model (or a compiled one)
    return F.linear(x, getattr(raw, "_orig_mod", raw).lm_head.weight).float() / temperature


def check(policy, ref, tokens, attention_mask, labels, old_logp, temperature=1.0):
    """`compare` on these rows (tokens (B, P+N), labels (B, N)): one fp32 forward of each model."""
    n = labels.shape[1]
    return compare(response_logits(policy, tokens, attention_mask, n, temperature),
                   response_logits(ref, tokens, attention_mask, n, temperature), labels, old_logp)


def summary(rows):
    """[(epoch, compare's dict)] -> {'kl_est/e1/<key>' / 'kl_est/e2+/<key>': mean over the rows that have it}."""
    out = {}
    for name, part in (("e1", [r for e, r in rows if e == 0]), ("e2+", [r for e, r in rows if e > 0])):
        for k in dict.fromkeys(k for r in part for k in r):
            xs = [r[k] for r in part if k in r]
            out[f"kl_est/{name}/{k}"] = sum(xs) / len(xs)
    return out
