"""
Plain PyTorch definitions of everything in kernels/: the readable spec of what
the Triton kernels compute, the CPU fallback, and the oracle the tests compare
against. All functions take logits (..., V) in any float dtype, compute in fp32
and return fp32 (...), with temperature applied as logits / T.
"""
import torch


def _logp(logits, temperature):
    x = logits.float()
    if temperature != 1.0:  # x / 1 is x: skip a pass over (and a copy of) the logits
        x = x / temperature
    return torch.log_softmax(x, dim=-1)


def _entropy_from_logp(logp):
    # H = -sum p log p. Masked vocab entries (-inf logits) have p = 0 and
    # log p = -inf; 0 * -inf is NaN, so zero log p there *before* the product
    # (a where() after the product would still send NaN into the gradient).
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)


def logprobs(logits, labels, ignore_index=-100, temperature=1.0):
    """log softmax(logits / T)[label]; 0 (and zero gradient) where label == ignore_index."""
    ignored = labels == ignore_index
    idx = labels.masked_fill(ignored, 0).long().unsqueeze(-1)
    logp = _logp(logits, temperature).gather(-1, idx).squeeze(-1)
    return logp.masked_fill(ignored, 0.0)


def entropy(logits, temperature=1.0):
    """Entropy of softmax(logits / T), per position."""
    return _entropy_from_logp(_logp(logits, temperature))


def logprobs_entropy(logits, labels, ignore_index=-100, temperature=1.0):
    """(logprobs(...), entropy(...)). Entropy is computed for every row, ignored or not."""
    ignored = labels == ignore_index
    idx = labels.masked_fill(ignored, 0).long().unsqueeze(-1)
    logp_all = _logp(logits, temperature)
    logp = logp_all.gather(-1, idx).squeeze(-1).masked_fill(ignored, 0.0)
    return logp, _entropy_from_logp(logp_all)


def kl(logits, ref_logits, temperature=1.0):
    """Exact KL(p || p_ref) = sum_v p (log p - log p_ref) per position; no gradient to ref_logits."""
    logp = _logp(logits, temperature)
    ref_logp = _logp(ref_logits.detach(), temperature)
    p = logp.exp()
    # where p = 0 the term is 0 (even if p_ref = 0 too); where p > 0 = p_ref the KL is +inf, as it should be.
    return (p * (logp - ref_logp).masked_fill(p == 0, 0.0)).sum(-1)


def kl_estimate(logp, ref_logp, kind="k3"):
    """Per-token KL(p || p_ref) estimators from samples of p (J. Schulman, "Approximating KL divergence").
    With r = p_ref / p evaluated at the sampled token:
      k1 = -log r                  unbiased, high variance, can be negative
      k2 = (log r)^2 / 2           biased, low variance, >= 0
      k3 = (r - 1) - log r         unbiased, low variance, >= 0
    """
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio ** 2
    if kind == "k3":
        # exp(+89) already overflows fp32 to inf (and inf - inf = NaN in the gradient); one token
        # the policy has drifted far from the reference on would poison the whole batch. Clamp the
        # log-ratio to [-20, 20] as verl / OpenRLHF do: k3 stays finite (<= e^20) and >= 0.
        neg_log_ratio = (-log_ratio).clamp(-20.0, 20.0)
        return neg_log_ratio.exp() - neg_log_ratio - 1.0
    raise ValueError(f"unknown kl_estimate kind {kind!r}; expected 'k1', 'k2' or 'k3'")


def linear_logprobs_entropy(hidden, weight, labels, ignore_index=-100, temperature=1.0):
    """Unfused definition: logits = hidden @ weight.T (in fp32), then logprobs_entropy."""
    logits = hidden.float() @ weight.float().t()
    return logprobs_entropy(logits, labels, ignore_index, temperature)


# ---------------------------------------------------------------------------------------------
# Chunked lm_head + log-prob/entropy: the CPU path of kernels.linear_logprobs_entropy.
# Never holds more than (chunk x V) logits; backward recomputes them chunk by chunk.
# With z = hidden @ W^T / T, lse = logsumexp(z), log q = z - lse, q = softmax(z), H = -sum q log q:
#   d logp / dz_j = onehot_j - q_j                 (0 on ignored rows)
#   d H    / dz_j = -q_j (log q_j + H)
#   dL/dhidden = (dL/dz / T) @ W,   dL/dW = (dL/dz / T)^T @ hidden
# ---------------------------------------------------------------------------------------------
class ChunkedLinearLogprobsEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, temperature, chunk, with_entropy=True):
        h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
        w = weight.float()
        n = h.shape[0]
        logp, ent, lse = (torch.empty(n, device=h.device, dtype=torch.float32) for _ in range(3))
        ent.zero_()
        for i in range(0, n, chunk):
            z = h[i:i + chunk].float() @ w.t()
            if temperature != 1.0:
                z /= temperature
            ignored = y[i:i + chunk] == ignore_index
            lse[i:i + chunk] = torch.logsumexp(z, -1)
            lab = z.gather(-1, y[i:i + chunk].masked_fill(ignored, 0).long()[:, None])[:, 0] - lse[i:i + chunk]
            logp[i:i + chunk] = lab.masked_fill(ignored, 0.0)
            if with_entropy:  # H = lse - E_q[z]
                logq = z.sub_(lse[i:i + chunk, None])
                ent[i:i + chunk] = -(logq.exp() * logq).sum(-1)
        ctx.save_for_backward(h, weight, y, lse, ent)
        ctx.ignore_index, ctx.temperature, ctx.chunk, ctx.with_entropy = ignore_index, temperature, chunk, with_entropy
        ctx.lead_shape = hidden.shape[:-1]
        return logp.view(ctx.lead_shape), ent.view(ctx.lead_shape)

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        h, weight, y, lse, ent = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        g_logp, g_ent = g_logp.reshape(-1).float(), g_ent.reshape(-1).float()
        w = weight.float()
        grad_h = torch.empty(h.shape, device=h.device, dtype=torch.float32)
        grad_w = torch.zeros_like(w)
        for i in range(0, h.shape[0], chunk):
            hc = h[i:i + chunk].float()
            logq = hc @ w.t()
            if T != 1.0:
                logq /= T
            logq -= lse[i:i + chunk, None]
            q = logq.exp()
            yc, gl = y[i:i + chunk], g_logp[i:i + chunk]
            gl = gl.masked_fill(yc == ctx.ignore_index, 0.0)
            if ctx.with_entropy:
                gz = -g_ent[i:i + chunk, None] * q * (logq + ent[i:i + chunk, None])
                gz -= gl[:, None] * q
            else:  # log-probs only: dL/dz = G_logp (onehot - q)
                gz = q.mul_(-gl[:, None])
            rows = torch.arange(len(yc), device=yc.device)
            gz[rows, yc.masked_fill(yc == ctx.ignore_index, 0).long()] += gl
            if T != 1.0:
                gz /= T
            grad_h[i:i + chunk] = gz @ w
            grad_w += gz.t() @ hc
        grad_h = grad_h.view(*ctx.lead_shape, h.shape[-1]).to(h.dtype)
        return grad_h, grad_w.to(weight.dtype), None, None, None, None, None


def linear_logprobs_entropy_chunked(hidden, weight, labels, ignore_index=-100, temperature=1.0, chunk=None,
                                    with_entropy=True):
    """(logp, entropy); with_entropy=False skips the entropy (returned as zeros, no gradient through it)."""
    if chunk is None:  # ~32M fp32 logits (128 MiB) per chunk
        chunk = max(1, (1 << 25) // weight.shape[0])
    return ChunkedLinearLogprobsEntropy.apply(hidden, weight, labels, ignore_index, temperature, chunk, with_entropy)


def linear_kl(hidden, weight, ref_hidden, ref_weight, temperature=1.0):
    """Unfused definition: both models' logits (in fp32), then kl. No gradient to the reference."""
    logits = hidden.float() @ weight.float().t()
    ref_logits = ref_hidden.detach().float() @ ref_weight.detach().float().t()
    return kl(logits, ref_logits, temperature)


# ---------------------------------------------------------------------------------------------
# Chunked lm_head + exact KL to a reference: the CPU path of kernels.linear_kl.
# With z = hidden @ W^T / T, u = ref_hidden @ W_ref^T / T, log p = z - lse(z), log r = u - lse(u):
#   KL = sum_j p_j (log p_j - log r_j),    d KL / dz_j = p_j (log p_j - log r_j - KL)
#   dL/dhidden = (dL/dz / T) @ W,   dL/dW = (dL/dz / T)^T @ hidden;  nothing flows to the reference
# ---------------------------------------------------------------------------------------------
class ChunkedLinearKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, ref_hidden, ref_weight, temperature, chunk):
        h, hr = hidden.reshape(-1, hidden.shape[-1]), ref_hidden.detach().reshape(-1, hidden.shape[-1])
        w, wr = weight.float(), ref_weight.detach().float()
        out = torch.empty(h.shape[0], device=h.device, dtype=torch.float32)
        for i in range(0, h.shape[0], chunk):
            logp = torch.log_softmax(h[i:i + chunk].float() @ w.t() / temperature, -1)
            logr = torch.log_softmax(hr[i:i + chunk].float() @ wr.t() / temperature, -1)
            out[i:i + chunk] = (logp.exp() * (logp - logr)).sum(-1)
        ctx.save_for_backward(h, weight, hr, ref_weight, out)
        ctx.temperature, ctx.chunk, ctx.lead_shape = temperature, chunk, hidden.shape[:-1]
        return out.view(ctx.lead_shape)

    @staticmethod
    def backward(ctx, g):
        h, weight, hr, ref_weight, kl_ = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        g = g.reshape(-1).float()
        w, wr = weight.float(), ref_weight.detach().float()
        grad_h = torch.empty(h.shape, device=h.device, dtype=torch.float32)
        grad_w = torch.zeros_like(w)
        for i in range(0, h.shape[0], chunk):
            hc = h[i:i + chunk].float()
            logp = torch.log_softmax(hc @ w.t() / T, -1)
            logr = torch.log_softmax(hr[i:i + chunk].float() @ wr.t() / T, -1)
            gz = g[i:i + chunk, None] * logp.exp() * (logp - logr - kl_[i:i + chunk, None]) / T
            grad_h[i:i + chunk] = gz @ w
            grad_w += gz.t() @ hc
        grad_h = grad_h.view(*ctx.lead_shape, h.shape[-1]).to(h.dtype)
        return grad_h, grad_w.to(weight.dtype), None, None, None, None


def check_linear_kl_shapes(hidden, weight, ref_hidden, ref_weight):
    if ref_hidden.shape != hidden.shape or ref_weight.shape != weight.shape:
        raise ValueError(f"linear_kl: reference shapes {tuple(ref_hidden.shape)}, {tuple(ref_weight.shape)} "
                         f"differ from the policy's {tuple(hidden.shape)}, {tuple(weight.shape)}")


def linear_kl_chunked(hidden, weight, ref_hidden, ref_weight, temperature=1.0, chunk=None):
    check_linear_kl_shapes(hidden, weight, ref_hidden, ref_weight)
    if chunk is None:  # ~32M fp32 logits per model per chunk
        chunk = max(1, (1 << 25) // weight.shape[0])
    return ChunkedLinearKL.apply(hidden, weight, ref_hidden, ref_weight, temperature, chunk)
