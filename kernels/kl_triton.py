"""
Triton exact KL(p || q) per position over the full vocabulary, p = softmax(logits / T),
q = softmax(ref_logits / T), without materialising either softmax. One program per row.

Forward, with x = logits / T and y = ref_logits / T streamed in vocabulary blocks:
    online log-sum-exp of x (m_p, s_p) and of y (m_q, s_q), plus t = sum_v exp(x_v - m_p) (x_v - y_v)
    (t rescales with p's max only:  t <- exp(m_p - m_p') t)
    KL = E_p[x - y] - lse_p + lse_q = t / s_p - lse_p + lse_q

Backward (gradient w.r.t. logits only; ref_logits is a constant), with p_j = exp(x_j - lse_p):
    d KL / d x_j = p_j (log p_j - log q_j - KL) = p_j ((x_j - y_j) - (lse_p - lse_q) - KL)
    d L / d logits_j = G p_j ((x_j - y_j) - (lse_p - lse_q) - KL) / T
Masked vocab: where p_j = 0 the term is 0, even where y_j = -inf too (the (x - y) factor is where()-guarded,
since 0 * NaN or 0 * inf would be NaN); where p_j > 0 but q_j = 0 the KL is +inf, as it should be.
"""
import torch
import triton
import triton.language as tl

from .logprobs_triton import rows_view, NUM_WARPS

BLOCK_V = 2048  # two rows of logits per block in registers


@triton.jit
def _kl_fwd_kernel(X, Y, KL, LSE_P, LSE_Q, x_inner, x_outer, x_stride, y_inner, y_outer, y_stride, V, inv_T,
                   BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_ptr = X + (row // x_inner) * x_outer + (row % x_inner) * x_stride
    y_ptr = Y + (row // y_inner) * y_outer + (row % y_inner) * y_stride
    m_p = tl.full([], -1e30, tl.float32)
    m_q = tl.full([], -1e30, tl.float32)
    s_p = tl.zeros([], tl.float32)
    s_q = tl.zeros([], tl.float32)
    t = tl.zeros([], tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32) * inv_T
        y = tl.load(y_ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32) * inv_T
        mp_new = tl.maximum(m_p, tl.max(x, 0))
        mq_new = tl.maximum(m_q, tl.max(y, 0))
        a_p = tl.exp(m_p - mp_new)
        e_p = tl.exp(x - mp_new)
        t = a_p * t + tl.sum(e_p * tl.where(e_p > 0, x - y, 0.0), 0)
        s_p = a_p * s_p + tl.sum(e_p, 0)
        s_q = tl.exp(m_q - mq_new) * s_q + tl.sum(tl.exp(y - mq_new), 0)
        m_p, m_q = mp_new, mq_new
    lse_p = m_p + tl.log(s_p)
    lse_q = m_q + tl.log(s_q)
    tl.store(KL + row, t / s_p - lse_p + lse_q)
    tl.store(LSE_P + row, lse_p)
    tl.store(LSE_Q + row, lse_q)


@triton.jit
def _kl_bwd_kernel(X, Y, DX, KL, LSE_P, LSE_Q, G, x_inner, x_outer, x_stride, y_inner, y_outer, y_stride, V,
                   inv_T, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_ptr = X + (row // x_inner) * x_outer + (row % x_inner) * x_stride
    y_ptr = Y + (row // y_inner) * y_outer + (row % y_inner) * y_stride
    dx_ptr = DX + row * V
    lse_p = tl.load(LSE_P + row)
    shift = lse_p - tl.load(LSE_Q + row) + tl.load(KL + row)
    g = tl.load(G + row) * inv_T
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32) * inv_T
        y = tl.load(y_ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32) * inv_T
        p = tl.exp(x - lse_p)
        dx = g * p * tl.where(p > 0, x - y - shift, 0.0)
        tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=cols < V)


def _block(V):
    return min(BLOCK_V, triton.next_power_of_2(V))


class KLFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, ref_logits, temperature, inplace_backward):
        assert logits.shape == ref_logits.shape, f"kl: shapes differ {logits.shape} vs {ref_logits.shape}"
        lead, V = logits.shape[:-1], logits.shape[-1]
        x, x_layout = rows_view(logits)
        y, y_layout = rows_view(ref_logits.detach())
        n = lead.numel()
        kl, lse_p, lse_q = (torch.empty(n, device=logits.device, dtype=torch.float32) for _ in range(3))
        if n > 0:
            _kl_fwd_kernel[(n,)](x, y, kl, lse_p, lse_q, *x_layout, *y_layout, V, 1.0 / temperature,
                                 _block(V), num_warps=NUM_WARPS)
        ctx.save_for_backward(x, y, kl, lse_p, lse_q)
        ctx.layouts, ctx.shape, ctx.V, ctx.inv_T = (x_layout, y_layout), logits.shape, V, 1.0 / temperature
        ctx.inplace = inplace_backward and x.data_ptr() == logits.data_ptr() and x.is_contiguous()
        return kl.view(lead)

    @staticmethod
    def backward(ctx, g):
        x, y, kl, lse_p, lse_q = ctx.saved_tensors
        n = kl.numel()
        dx = x if ctx.inplace else torch.empty((n, ctx.V), device=x.device, dtype=x.dtype)
        if n > 0:
            _kl_bwd_kernel[(n,)](x, y, dx, kl, lse_p, lse_q, g.reshape(-1).float().contiguous(),
                                 *ctx.layouts[0], *ctx.layouts[1], ctx.V, ctx.inv_T, _block(ctx.V),
                                 num_warps=NUM_WARPS)
        return dx.view(ctx.shape), None, None, None


def kl(logits, ref_logits, temperature=1.0, inplace_backward=False):
    return KLFunction.apply(logits, ref_logits, temperature, inplace_backward)
