"""
Fused log-prob / entropy / KL ops for RLHF. All take logits (..., V) in fp32 / bf16 / fp16, apply the
temperature as logits / T, compute in fp32 and return fp32 of shape (...), differentiable w.r.t. logits:

    logprobs(logits, labels, ignore_index=-100, temperature=1.0)          -> logp (0 where ignored)
    entropy(logits, temperature=1.0)                                       -> entropy
    logprobs_entropy(logits, labels, ignore_index=-100, temperature=1.0)  -> (logp, entropy), one read
    kl(logits, ref_logits, temperature=1.0)                                -> exact KL(p || p_ref), no grad to ref
    kl_estimate(logp, ref_logp, kind="k1" | "k2" | "k3")                   -> per-token KL estimate (plain torch)
    linear_logprobs_entropy(hidden, weight, labels, ignore_index=-100, temperature=1.0)
        -> (logp, entropy) of softmax(hidden @ weight.T / T), never materialising the logits;
           differentiable w.r.t. hidden and weight
    linear_logprobs(hidden, weight, labels, ignore_index=-100, temperature=1.0) -> logp alone, the same way
    linear_kl(hidden, weight, ref_hidden, ref_weight, temperature=1.0)
        -> exact KL(p || p_ref) of softmax(hidden @ weight.T / T) from softmax(ref_hidden @ ref_weight.T / T),
           never materialising either model's logits; differentiable w.r.t. hidden and weight only

Dispatch: the Triton kernels for CUDA tensors, or for any tensor when TRITON_INTERPRET=1 was set before
kernels was imported (see INTERPRET below); otherwise the plain PyTorch code in kernels/reference.py, so
every script runs anywhere (and importing kernels works without triton installed).

inplace_backward=True (logprobs / entropy / logprobs_entropy / kl, Triton path only) writes the gradient
into the logits buffer itself (as Liger does), saving a (N, V) allocation. Only use it when nothing reads
the logits after backward and you backward once (no retain_graph); on the reference path it is ignored.
"""
import importlib.util
import os

from . import reference
from .reference import kl_estimate

HAS_TRITON = importlib.util.find_spec("triton") is not None
# True: CPU tensors take the Triton path too, through Triton's interpreter. @triton.jit (ours and
# triton.language's own helpers) picks "compile for GPU" or "interpret on CPU" from TRITON_INTERPRET when
# triton and the kernel modules are imported, so the flag is read once, here. The kernel modules are
# imported lazily (on first Triton use), so `import kernels` never imports triton: CPU-only scripts don't
# pay for it, and a test can still set TRITON_INTERPRET=1 before triton is first imported.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def use_triton(t):
    return HAS_TRITON and (t.is_cuda or INTERPRET)


def logprobs(logits, labels, ignore_index=-100, temperature=1.0, inplace_backward=False):
    if use_triton(logits):
        from .logprobs_triton import logprobs as fused
        return fused(logits, labels, ignore_index, temperature, inplace_backward)
    return reference.logprobs(logits, labels, ignore_index, temperature)


def entropy(logits, temperature=1.0, inplace_backward=False):
    if use_triton(logits):
        from .logprobs_triton import entropy as fused
        return fused(logits, temperature, inplace_backward)
    return reference.entropy(logits, temperature)


def logprobs_entropy(logits, labels, ignore_index=-100, temperature=1.0, inplace_backward=False):
    if use_triton(logits):
        from .logprobs_triton import logprobs_entropy as fused
        return fused(logits, labels, ignore_index, temperature, inplace_backward)
    return reference.logprobs_entropy(logits, labels, ignore_index, temperature)


def kl(logits, ref_logits, temperature=1.0, inplace_backward=False):
    if use_triton(logits):
        from .kl_triton import kl as fused
        return fused(logits, ref_logits, temperature, inplace_backward)
    return reference.kl(logits, ref_logits, temperature)


def linear_logprobs_entropy(hidden, weight, labels, ignore_index=-100, temperature=1.0):
    if use_triton(hidden):
        from .linear_triton import linear_logprobs_entropy as fused
        return fused(hidden, weight, labels, ignore_index, temperature)
    return reference.linear_logprobs_entropy_chunked(hidden, weight, labels, ignore_index, temperature)


def linear_logprobs(hidden, weight, labels, ignore_index=-100, temperature=1.0):
    if use_triton(hidden):  # the kernel's entropy costs nothing next to its matmul: one kernel for both
        from .linear_triton import linear_logprobs_entropy as fused
        return fused(hidden, weight, labels, ignore_index, temperature)[0]
    return reference.linear_logprobs_entropy_chunked(hidden, weight, labels, ignore_index, temperature,
                                                     with_entropy=False)[0]


def linear_kl(hidden, weight, ref_hidden, ref_weight, temperature=1.0):
    if use_triton(hidden):
        from .linear_triton import linear_kl as fused
        return fused(hidden, weight, ref_hidden, ref_weight, temperature)
    return reference.linear_kl_chunked(hidden, weight, ref_hidden, ref_weight, temperature)


__all__ = ["logprobs", "entropy", "logprobs_entropy", "kl", "kl_estimate", "linear_logprobs_entropy", "linear_logprobs",
           "linear_kl"]
