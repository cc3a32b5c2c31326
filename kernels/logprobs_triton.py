"""
Triton log-prob / entropy of softmax(logits / T), one program per row, one read of the logits.

Forward, per row, with x = logits / T streamed over the vocabulary in blocks (online log-sum-exp,
fp32 accumulators, never the whole row in registers):
    m = running max,  s = sum_v exp(x_v - m),  t = sum_v exp(x_v - m) * (x_v - m)
    when the max moves m -> m', rescale with a = exp(m - m'):  s <- a s,  t <- a (t + (m - m') s)
    lse = m + log s,   logp = x[label] - lse,   H = lse - E_p[x] = log s - t / s
(t is kept relative to m so H never cancels two numbers of size |x| ~ 1e4.)

Backward, with p = exp(x - lse), G_logp and G_H the upstream gradients of the row:
    d logp / d x_j = [j == label] - p_j                 (0 on ignored rows)
    d H    / d x_j = -p_j (log p_j + H) = -p_j (x_j - lse + H)
    d L / d logits_j = (G_logp (onehot_j - p_j) - G_H p_j (x_j - lse + H)) / T
one read of the logits, one write of the gradient (optionally into the logits buffer itself).
Masked vocab (x_j = -inf) has p_j = 0, and 0 * -inf is NaN, so those products are where()-guarded.
"""
import torch
import triton
import triton.language as tl

BLOCK_V = 4096  # vocabulary block per loop step: a few thousand fp32 per program stays in registers
# The backward keeps more live per element (x, p, the gradient): at 4096 its fp16 log-prob-only variant spilled
# on sm_90a (4 B, tests/test_compile.py); at 2048 every variant takes <= 38 registers.
BLOCK_V_BWD = 2048
NUM_WARPS = 8


@triton.jit
def _logprobs_entropy_fwd_kernel(X, Y, LOGP, ENT, LSE, n_inner, s_outer, s_inner, V, ignore_index, inv_T,
                                 HAS_LABELS: tl.constexpr, HAS_ENTROPY: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_ptr = X + (row // n_inner) * s_outer + (row % n_inner) * s_inner
    if HAS_LABELS:
        label = tl.load(Y + row).to(tl.int64)
        ignored = label == ignore_index
        if not HAS_ENTROPY:  # log-prob only: nothing to compute for an ignored row
            if ignored:
                tl.store(LOGP + row, 0.0)
                return
    m = tl.full([], -1e30, tl.float32)  # finite start: a block of only -inf gives exp(-inf) = 0, not NaN
    s = tl.zeros([], tl.float32)
    t = tl.zeros([], tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32) * inv_T
        m_new = tl.maximum(m, tl.max(x, 0))
        a = tl.exp(m - m_new)
        e = tl.exp(x - m_new)
        t = a * (t + (m - m_new) * s) + tl.sum(e * tl.where(e > 0, x - m_new, 0.0), 0)
        s = a * s + tl.sum(e, 0)
        m = m_new
    lse = m + tl.log(s)
    tl.store(LSE + row, lse)
    if HAS_ENTROPY:
        tl.store(ENT + row, tl.log(s) - t / s)
    if HAS_LABELS:
        x_label = tl.load(x_ptr + tl.where(ignored, 0, label)).to(tl.float32) * inv_T
        tl.store(LOGP + row, tl.where(ignored, 0.0, x_label - lse))


@triton.jit
def _logprobs_entropy_bwd_kernel(X, DX, Y, LSE, ENT, G_LOGP, G_ENT, n_inner, s_outer, s_inner, V,
                                 ignore_index, inv_T,
                                 HAS_LABELS: tl.constexpr, HAS_ENTROPY: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_ptr = X + (row // n_inner) * s_outer + (row % n_inner) * s_inner
    dx_ptr = DX + row * V  # the gradient is always written as a contiguous (N, V)
    lse = tl.load(LSE + row)
    g_logp = 0.0
    label = -1
    if HAS_LABELS:
        label = tl.load(Y + row).to(tl.int64)
        ignored = label == ignore_index
        if not HAS_ENTROPY:  # ignored row of a log-prob-only call: zero gradient, no read
            if ignored:
                for start in range(0, V, BLOCK):
                    cols = start + tl.arange(0, BLOCK)
                    tl.store(dx_ptr + cols, tl.zeros([BLOCK], DX.dtype.element_ty), mask=cols < V)
                return
        g_logp = tl.where(ignored, 0.0, tl.load(G_LOGP + row))
    if HAS_ENTROPY:
        g_ent = tl.load(G_ENT + row)
        ent = tl.load(ENT + row)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32) * inv_T
        p = tl.exp(x - lse)
        g = tl.zeros([BLOCK], tl.float32)
        if HAS_LABELS:
            g = g_logp * (tl.where(cols == label, 1.0, 0.0) - p)
        if HAS_ENTROPY:
            g -= g_ent * p * tl.where(p > 0, x - lse + ent, 0.0)
        tl.store(dx_ptr + cols, (g * inv_T).to(DX.dtype.element_ty), mask=cols < V)


def rows_view(x):
    """(x, (n_inner, s_outer, s_inner)): row r of the (N, V) matrix starts at
    (r // n_inner) * s_outer + (r % n_inner) * s_inner. Avoids copying common views such as
    logits[:, :-1] of a (B, T, V) tensor; anything stranger is made contiguous."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    if x.dim() == 3 and not x.is_contiguous() and x.shape[1] > 0:
        return x, (x.shape[1], x.stride(0), x.stride(1))
    x = x.reshape(-1, x.shape[-1])
    return x, (max(x.shape[0], 1), 0, x.stride(0))


def _block(V, backward=False):
    return min(min(BLOCK_V, BLOCK_V_BWD) if backward else BLOCK_V, triton.next_power_of_2(V))


class LogprobsEntropyFunction(torch.autograd.Function):
    """Returns (logp,) / (entropy,) / (logp, entropy) depending on has_labels / has_entropy."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index, temperature, has_labels, has_entropy, inplace_backward):
        lead, V = logits.shape[:-1], logits.shape[-1]
        x, layout = rows_view(logits)
        n = lead.numel()
        lse, logp, ent = (torch.empty(n, device=logits.device, dtype=torch.float32) for _ in range(3))
        y = labels.reshape(-1).contiguous() if has_labels else lse  # dummy pointer when unused
        if n > 0:
            _logprobs_entropy_fwd_kernel[(n,)](x, y, logp, ent, lse, *layout, V, ignore_index, 1.0 / temperature,
                                               has_labels, has_entropy, _block(V), num_warps=NUM_WARPS)
        ctx.save_for_backward(x, y, lse, ent)
        ctx.layout, ctx.shape, ctx.V = layout, logits.shape, V
        ctx.args = (ignore_index, 1.0 / temperature, has_labels, has_entropy)
        # in place only when x *is* the caller's contiguous logits buffer (the caller said it's dead after backward)
        ctx.inplace = inplace_backward and x.data_ptr() == logits.data_ptr() and x.is_contiguous()
        outs = ([logp.view(lead)] if has_labels else []) + ([ent.view(lead)] if has_entropy else [])
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        x, y, lse, ent = ctx.saved_tensors
        ignore_index, inv_T, has_labels, has_entropy = ctx.args
        n = lse.numel()
        dx = x if ctx.inplace else torch.empty((n, ctx.V), device=x.device, dtype=x.dtype)
        g_logp = grads[0].reshape(-1).float().contiguous() if has_labels else lse
        g_ent = grads[-1].reshape(-1).float().contiguous() if has_entropy else lse
        if n > 0:
            _logprobs_entropy_bwd_kernel[(n,)](x, dx, y, lse, ent, g_logp, g_ent, *ctx.layout, ctx.V,
                                               ignore_index, inv_T, has_labels, has_entropy,
                                               _block(ctx.V, backward=True), num_warps=NUM_WARPS)
        return dx.view(ctx.shape), None, None, None, None, None, None


def logprobs(logits, labels, ignore_index=-100, temperature=1.0, inplace_backward=False):
    return LogprobsEntropyFunction.apply(logits, labels, ignore_index, temperature, True, False, inplace_backward)[0]


def entropy(logits, temperature=1.0, inplace_backward=False):
    return LogprobsEntropyFunction.apply(logits, None, -100, temperature, False, True, inplace_backward)[0]


def logprobs_entropy(logits, labels, ignore_index=-100, temperature=1.0, inplace_backward=False):
    return LogprobsEntropyFunction.apply(logits, labels, ignore_index, temperature, True, True, inplace_backward)
