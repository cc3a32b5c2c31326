"""
Fused lm_head + log-prob/entropy in Triton: (logp, entropy) of softmax(hidden @ W^T / T) without ever
holding the (tokens x V) logits. Logits are produced tile by tile on chip (tl.dot over d-tiles, fp32
accumulation) and consumed immediately; backward recomputes them.

Forward: one program per BLOCK_N tokens loops over the vocabulary in BLOCK_V tiles, keeping per-row
online log-sum-exp statistics (as in logprobs_triton.py) and the label's logit:
    z = h W^T / T,  m, s = sum exp(z - m), t = sum exp(z - m)(z - m)  ->  lse = m + log s,  H = log s - t / s
    logp = z[label] - lse

Backward: one program per (BLOCK_N tokens, BLOCK_V vocab) tile recomputes z, then with q = exp(z - lse):
    dL/dz_j = G_logp (onehot_j - q_j) - G_H q_j (z_j - lse + H)          (G_logp = 0 on ignored rows)
    dL/dh  += (dL/dz / T) @ W_tile      dL/dW_tile += (dL/dz / T)^T @ h    (fp32 atomic adds over d-tiles)
so the backward costs two more matmul-sized passes and the atomics make the gradients' summation order
(hence their last bits) nondeterministic.

Fused exact KL to a reference model, from both models' hidden states: KL(p || p_ref) per token with
p = softmax(h W^T / T) and p_ref = softmax(h_ref W_ref^T / T), neither logits tensor ever held. Forward
streams both logit tiles (z from the policy, u from the reference) through the same online statistics as
kl_triton.py: (m_p, s_p) and (m_r, s_r) for the two log-sum-exps and t = sum exp(z - m_p)(z - u), so
    KL = t / s_p - lse_p + lse_r
Backward (gradients for h and W only; the reference is a constant), recomputing both tiles:
    dL/dz_j = G p_j ((z_j - lse_p) - (u_j - lse_r) - KL)
    dL/dh  += (dL/dz / T) @ W_tile      dL/dW_tile += (dL/dz / T)^T @ h
"""
import torch
import triton
import triton.language as tl

from .reference import check_linear_kl_shapes

# Tiles per operand width: (BLOCK_N tokens, BLOCK_V vocab, BLOCK_D features, warps, pipeline stages), chosen so
# that no kernel spills registers or overflows shared memory on sm_80 or sm_90a (tests/test_compile.py; the
# table in bench/RESULTS.md). Speed not tuned on a GPU yet. 16-bit operands go to the tensor cores: a 64 x 128
# output tile, 32 features deep (at 64 deep the backward kernels used all 255 registers on sm_80, and spilled
# with triton 3.8). fp32 stays exact ("ieee": FMA dots whose operand tiles sit in registers) and needs much
# smaller tiles: at 64 x 128 x 64 every fp32 kernel spilled, up to 3.6 KB per thread; at 32 x 64 x 32 none did
# with triton 3.9.0, but with triton 3.8.0 (what torch 2.14.1 brings) linear_bwd spilled 4 B on sm_90a, so 32
# x 32 x 32 (nothing spills with either, 2026-12-02).
CONFIGS = {16: (64, 128, 32, 8, 3), 32: (32, 32, 32, 8, 2)}


def _config(dtype):
    return CONFIGS[16 if torch.finfo(dtype).bits == 16 else 32]


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # The CPU interpreter (TRITON_INTERPRET=1) multiplies bf16 tiles as their raw uint16 bits, so there we
    # upcast first: exact, since a bf16 x bf16 product fits in fp32, as on the GPU's MMA with fp32 accumulation.
    if UPCAST:
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _logits_tile(H, W, rows, cols, N, V, D, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                 BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        h = tl.load(H + rows[:, None] * D + ds[None, :], mask=(rows[:, None] < N) & (ds[None, :] < D), other=0.0)
        w = tl.load(W + cols[:, None] * D + ds[None, :], mask=(cols[:, None] < V) & (ds[None, :] < D), other=0.0)
        acc += _dot(h, tl.trans(w), PRECISION, UPCAST)
    return acc


@triton.jit
def _accumulate_grads(dz, H, W, DH, DW, rows, cols, N, V, D, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
                      UPCAST: tl.constexpr):
    """Given a tile's dL/dz / T (BLOCK_N x BLOCK_V): DH[rows] += dz @ W[cols], DW[cols] += dz^T @ H[rows],
    d-tile by d-tile, with fp32 atomic adds (other tiles add into the same rows and columns)."""
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        h_mask = (rows[:, None] < N) & (ds[None, :] < D)
        w_mask = (cols[:, None] < V) & (ds[None, :] < D)
        h = tl.load(H + rows[:, None] * D + ds[None, :], mask=h_mask, other=0.0)
        w = tl.load(W + cols[:, None] * D + ds[None, :], mask=w_mask, other=0.0)
        tl.atomic_add(DH + rows[:, None] * D + ds[None, :], _dot(dz, w, PRECISION, UPCAST), mask=h_mask)
        tl.atomic_add(DW + cols[:, None] * D + ds[None, :], _dot(tl.trans(dz), h, PRECISION, UPCAST),
                      mask=w_mask)


@triton.jit
def _linear_fwd_kernel(H, W, Y, LOGP, ENT, LSE, N, V, D, ignore_index, inv_T, BLOCK_N: tl.constexpr,
                       BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    labels = tl.load(Y + rows, mask=rows < N, other=ignore_index).to(tl.int64)
    m = tl.full([BLOCK_N], -1e30, tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    t = tl.zeros([BLOCK_N], tl.float32)
    z_label = tl.zeros([BLOCK_N], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V).to(tl.int64)
        z = _logits_tile(H, W, rows, cols, N, V, D, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION, UPCAST) * inv_T
        z = tl.where(cols[None, :] < V, z, -float("inf"))
        m_new = tl.maximum(m, tl.max(z, 1))
        a = tl.exp(m - m_new)
        e = tl.exp(z - m_new[:, None])
        t = a * (t + (m - m_new) * s) + tl.sum(e * tl.where(e > 0, z - m_new[:, None], 0.0), 1)
        s = a * s + tl.sum(e, 1)
        m = m_new
        z_label += tl.sum(tl.where(cols[None, :] == labels[:, None], z, 0.0), 1)
    lse = m + tl.log(s)
    tl.store(LSE + rows, lse, mask=rows < N)
    tl.store(ENT + rows, tl.log(s) - t / s, mask=rows < N)
    tl.store(LOGP + rows, tl.where(labels == ignore_index, 0.0, z_label - lse), mask=rows < N)


@triton.jit
def _linear_bwd_kernel(H, W, Y, LSE, ENT, G_LOGP, G_ENT, DH, DW, N, V, D, ignore_index, inv_T,
                       BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                       PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    labels = tl.load(Y + rows, mask=rows < N, other=ignore_index).to(tl.int64)
    lse = tl.load(LSE + rows, mask=rows < N, other=0.0)
    ent = tl.load(ENT + rows, mask=rows < N, other=0.0)
    g_logp = tl.where(labels == ignore_index, 0.0, tl.load(G_LOGP + rows, mask=rows < N, other=0.0))
    g_ent = tl.load(G_ENT + rows, mask=rows < N, other=0.0)

    logq = _logits_tile(H, W, rows, cols, N, V, D, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION, UPCAST) * inv_T - lse[:, None]
    q = tl.exp(logq)
    onehot = tl.where(cols[None, :] == labels[:, None], 1.0, 0.0)
    dz = g_logp[:, None] * (onehot - q) - g_ent[:, None] * q * (logq + ent[:, None])
    dz = tl.where((rows[:, None] < N) & (cols[None, :] < V), dz * inv_T, 0.0).to(W.dtype.element_ty)
    _accumulate_grads(dz, H, W, DH, DW, rows, cols, N, V, D, BLOCK_D, PRECISION, UPCAST)


@triton.jit
def _linear_kl_fwd_kernel(H, W, HR, WR, KL, LSE_P, LSE_R, N, V, D, inv_T, BLOCK_N: tl.constexpr,
                          BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_p = tl.full([BLOCK_N], -1e30, tl.float32)
    m_r = tl.full([BLOCK_N], -1e30, tl.float32)
    s_p = tl.zeros([BLOCK_N], tl.float32)
    s_r = tl.zeros([BLOCK_N], tl.float32)
    t = tl.zeros([BLOCK_N], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V).to(tl.int64)
        z = _logits_tile(H, W, rows, cols, N, V, D, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION, UPCAST) * inv_T
        u = _logits_tile(HR, WR, rows, cols, N, V, D, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION, UPCAST) * inv_T
        valid = cols[None, :] < V
        z = tl.where(valid, z, -float("inf"))
        u = tl.where(valid, u, -float("inf"))
        mp_new = tl.maximum(m_p, tl.max(z, 1))
        mr_new = tl.maximum(m_r, tl.max(u, 1))
        a_p = tl.exp(m_p - mp_new)
        e_p = tl.exp(z - mp_new[:, None])
        t = a_p * t + tl.sum(tl.where(valid, e_p * (z - u), 0.0), 1)
        s_p = a_p * s_p + tl.sum(e_p, 1)
        s_r = tl.exp(m_r - mr_new) * s_r + tl.sum(tl.exp(u - mr_new[:, None]), 1)
        m_p, m_r = mp_new, mr_new
    lse_p = m_p + tl.log(s_p)
    lse_r = m_r + tl.log(s_r)
    tl.store(KL + rows, t / s_p - lse_p + lse_r, mask=rows < N)
    tl.store(LSE_P + rows, lse_p, mask=rows < N)
    tl.store(LSE_R + rows, lse_r, mask=rows < N)


@triton.jit
def _linear_kl_bwd_kernel(H, W, HR, WR, KL, LSE_P, LSE_R, G, DH, DW, N, V, D, inv_T, BLOCK_N: tl.constexpr,
                          BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    kl = tl.load(KL + rows, mask=rows < N, other=0.0)
    lse_p = tl.load(LSE_P + rows, mask=rows < N, other=0.0)
    lse_r = tl.load(LSE_R + rows, mask=rows < N, other=0.0)
    g = tl.load(G + rows, mask=rows < N, other=0.0)
    logp = _logits_tile(H, W, rows, cols, N, V, D, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION, UPCAST) * inv_T - lse_p[:, None]
    logr = _logits_tile(HR, WR, rows, cols, N, V, D, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION, UPCAST) * inv_T - lse_r[:, None]
    dz = g[:, None] * tl.exp(logp) * (logp - logr - kl[:, None])
    dz = tl.where((rows[:, None] < N) & (cols[None, :] < V), dz * inv_T, 0.0).to(W.dtype.element_ty)
    _accumulate_grads(dz, H, W, DH, DW, rows, cols, N, V, D, BLOCK_D, PRECISION, UPCAST)


class LinearLogprobsEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, temperature):
        dtype = torch.promote_types(hidden.dtype, weight.dtype)  # tl.dot needs one dtype
        h = hidden.reshape(-1, hidden.shape[-1]).to(dtype).contiguous()
        w = weight.to(dtype).contiguous()
        y = labels.reshape(-1).contiguous()
        (n, d), V = h.shape, w.shape[0]
        logp, ent, lse = (torch.empty(n, device=h.device, dtype=torch.float32) for _ in range(3))
        precision = "ieee" if dtype == torch.float32 else "tf32"  # fp32 stays exact (no TF32); ignored for 16-bit
        if n > 0:
            bn, bv, bd, warps, stages = _config(dtype)
            _linear_fwd_kernel[(triton.cdiv(n, bn),)](h, w, y, logp, ent, lse, n, V, d, ignore_index, 1.0 / temperature,
                                                      bn, bv, bd, precision, not h.is_cuda, num_warps=warps,
                                                      num_stages=stages)
        ctx.save_for_backward(h, w, y, lse, ent)
        ctx.args = (ignore_index, 1.0 / temperature, precision, hidden.shape, hidden.dtype, weight.dtype)
        return logp.view(hidden.shape[:-1]), ent.view(hidden.shape[:-1])

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        h, w, y, lse, ent = ctx.saved_tensors
        ignore_index, inv_T, precision, h_shape, h_dtype, w_dtype = ctx.args
        (n, d), V = h.shape, w.shape[0]
        dh = torch.zeros((n, d), device=h.device, dtype=torch.float32)  # fp32: the atomics accumulate here
        dw = torch.zeros((V, d), device=w.device, dtype=torch.float32)
        if n > 0:
            bn, bv, bd, warps, stages = _config(h.dtype)
            grid = (triton.cdiv(n, bn), triton.cdiv(V, bv))
            _linear_bwd_kernel[grid](h, w, y, lse, ent, g_logp.reshape(-1).float().contiguous(),
                                     g_ent.reshape(-1).float().contiguous(), dh, dw, n, V, d, ignore_index, inv_T,
                                     bn, bv, bd, precision, not h.is_cuda, num_warps=warps, num_stages=stages)
        return dh.view(h_shape).to(h_dtype), dw.to(w_dtype), None, None, None


def linear_logprobs_entropy(hidden, weight, labels, ignore_index=-100, temperature=1.0):
    return LinearLogprobsEntropyFunction.apply(hidden, weight, labels, ignore_index, temperature)


class LinearKLFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, ref_hidden, ref_weight, temperature):
        check_linear_kl_shapes(hidden, weight, ref_hidden, ref_weight)
        dtype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype),
                                    torch.promote_types(ref_hidden.dtype, ref_weight.dtype))
        h = hidden.reshape(-1, hidden.shape[-1]).to(dtype).contiguous()
        hr = ref_hidden.detach().reshape(-1, hidden.shape[-1]).to(dtype).contiguous()
        w, wr = weight.to(dtype).contiguous(), ref_weight.detach().to(dtype).contiguous()
        (n, d), V = h.shape, w.shape[0]
        kl, lse_p, lse_r = (torch.empty(n, device=h.device, dtype=torch.float32) for _ in range(3))
        precision = "ieee" if dtype == torch.float32 else "tf32"
        if n > 0:
            bn, bv, bd, warps, stages = _config(dtype)
            _linear_kl_fwd_kernel[(triton.cdiv(n, bn),)](h, w, hr, wr, kl, lse_p, lse_r, n, V, d, 1.0 / temperature,
                                                         bn, bv, bd, precision, not h.is_cuda, num_warps=warps,
                                                         num_stages=stages)
        ctx.save_for_backward(h, w, hr, wr, kl, lse_p, lse_r)
        ctx.args = (1.0 / temperature, precision, hidden.shape, hidden.dtype, weight.dtype)
        return kl.view(hidden.shape[:-1])

    @staticmethod
    def backward(ctx, g):
        h, w, hr, wr, kl, lse_p, lse_r = ctx.saved_tensors
        inv_T, precision, h_shape, h_dtype, w_dtype = ctx.args
        (n, d), V = h.shape, w.shape[0]
        dh = torch.zeros((n, d), device=h.device, dtype=torch.float32)
        dw = torch.zeros((V, d), device=w.device, dtype=torch.float32)
        if n > 0:
            bn, bv, bd, warps, stages = _config(h.dtype)
            grid = (triton.cdiv(n, bn), triton.cdiv(V, bv))
            _linear_kl_bwd_kernel[grid](h, w, hr, wr, kl, lse_p, lse_r, g.reshape(-1).float().contiguous(), dh, dw,
                                        n, V, d, inv_T, bn, bv, bd, precision, not h.is_cuda, num_warps=warps,
                                        num_stages=stages)
        return dh.view(h_shape).to(h_dtype), dw.to(w_dtype), None, None, None


def linear_kl(hidden, weight, ref_hidden, ref_weight, temperature=1.0):
    return LinearKLFunction.apply(hidden, weight, ref_hidden, ref_weight, temperature)
