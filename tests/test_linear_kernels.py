"""
kernels.linear_logprobs_entropy on CPU: the fused lm_head Triton kernel (through Triton's interpreter) and
the chunked PyTorch path, both against the unfused definition (logits = hidden @ W^T, then log-softmax).
Small odd shapes so every tile loop has a ragged tail: the interpreter's tl.dot is slow.
"""
import os

# See tests/test_kernels.py: TRITON_INTERPRET=1 must be set before triton is first imported, and is set only
# while this module's tests run.
_ENV = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
import pytest  # noqa: E402
import torch  # noqa: E402

import kernels  # noqa: E402
from kernels import linear_triton, reference  # noqa: E402


def _restore_env():
    if _ENV is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _ENV


_restore_env()


@pytest.fixture(scope="module", autouse=True)
def triton_interpreter():
    assert type(linear_triton._linear_fwd_kernel).__name__ == "InterpretedFunction", (
        "triton was imported before TRITON_INTERPRET=1 was set (some earlier import pulled it in); "
        "run this file on its own or import it first")
    os.environ["TRITON_INTERPRET"] = "1"
    kernels.INTERPRET = True
    configs = dict(linear_triton.CONFIGS)
    # 16 tokens x 64 vocab x 16 features per tile (16 is tl.dot's minimum): every loop below has a ragged tail
    linear_triton.CONFIGS.update({bits: (16, 64, 16, *cfg[3:]) for bits, cfg in configs.items()})
    yield
    linear_triton.CONFIGS.update(configs)
    kernels.INTERPRET = _ENV == "1"
    _restore_env()


def assert_close(actual, expected, rtol, atol, what):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    ok = torch.isclose(actual.float(), expected.float(), rtol=rtol, atol=atol)
    err = (actual.float() - expected.float()).abs().nan_to_num(float("inf"))
    assert ok.all(), f"{what}: max abs error {err.max().item():.3g} (rtol={rtol}, atol={atol}), " \
                     f"{(~ok).sum().item()} of {ok.numel()} off"


# name -> (token shape, d, V, dtype, temperature, ignore)
CASES = {
    "ragged": ((2, 9), 40, 301, torch.float32, 1.0, "some"),  # 18 tokens, d 40, V 301: all tails ragged
    "temperature": ((20,), 32, 300, torch.float32, 0.7, "some"),
    "leading_dims": ((2, 2, 3), 32, 129, torch.float32, 1.0, "some"),
    "single_token": ((1,), 16, 100, torch.float32, 1.3, "none"),
    "all_ignored": ((2, 5), 32, 300, torch.float32, 1.0, "all"),
    "bf16": ((2, 9), 40, 301, torch.bfloat16, 1.0, "some"),
}


def make_case(name, seed=0):
    shape, d, V, dtype, T, ignore = CASES[name]
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, d, generator=g).to(dtype)
    weight = (torch.randn(V, d, generator=g) * d ** -0.5 * 3).to(dtype)
    labels = torch.randint(0, V, shape, generator=g)
    if ignore == "some":
        labels.view(-1)[::4] = -100
    elif ignore == "all":
        labels.fill_(-100)
    upstream = [torch.randn(shape, generator=g) for _ in range(2)]
    return hidden, weight, labels, T, upstream


def run_with_grad(fn, hidden, weight, labels, T, upstream):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    logp, ent = fn(hidden, weight, labels, temperature=T)
    ((logp * upstream[0]).sum() + (ent * upstream[1]).sum()).backward()
    return logp.detach(), ent.detach(), hidden.grad, weight.grad


def check_against_unfused(fn, case):
    hidden, weight, labels, T, upstream = make_case(case)
    ours = run_with_grad(fn, hidden, weight, labels, T, upstream)
    expected = run_with_grad(reference.linear_logprobs_entropy, hidden, weight, labels, T, upstream)
    # Outputs: fp32 logits from the same inputs on both sides, only the summation order differs.
    # Gradients, fp32: the same. bf16: the fused kernel rounds dL/dlogits to bf16 before the two gradient
    # matmuls (as the tensor cores need) and both sides round the result to bf16; so allow a few bf16 ulps
    # (2^-8 relative) of the gradient's own scale.
    for what, a, b in zip(("logp", "entropy", "grad hidden", "grad weight"), ours, expected):
        rtol, atol = 1e-5, 1e-5
        if hidden.dtype == torch.bfloat16 and what.startswith("grad"):
            rtol, atol = 2 ** -6, 2 ** -6 * b.float().abs().max().item()
        assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
        assert_close(a, b, rtol, atol, f"{case} {what}")
    if labels.eq(-100).any():  # ignored positions: logp exactly 0
        assert (ours[0][labels == -100] == 0).all()


@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_unfused(case):
    check_against_unfused(kernels.linear_logprobs_entropy, case)


@pytest.mark.parametrize("case", list(CASES))
def test_chunked_matches_unfused(case):
    # the CPU path; chunk=4 tokens so the chunk loop has a ragged tail too
    def chunked(h, w, y, temperature):
        return reference.linear_logprobs_entropy_chunked(h, w, y, temperature=temperature, chunk=4)
    check_against_unfused(chunked, case)


def test_dispatch():
    hidden, weight, labels, T, _ = make_case("ragged")
    hidden.requires_grad_()
    assert type(kernels.linear_logprobs_entropy(hidden, weight, labels)[0].grad_fn).__name__ == \
        "LinearLogprobsEntropyFunctionBackward"
    kernels.INTERPRET = False
    try:
        out = kernels.linear_logprobs_entropy(hidden, weight, labels)[0]
        assert type(out.grad_fn).__name__ == "ChunkedLinearLogprobsEntropyBackward"
    finally:
        kernels.INTERPRET = True


# ------------------------------------------------------------------------------------------ linear_kl
def make_kl_case(name, seed=0, same=False):
    """A policy and a nearby reference (its hidden states and weight perturbed), or the very same model."""
    hidden, weight, _, T, upstream = make_case(name, seed)
    g = torch.Generator().manual_seed(seed + 1)
    if same:
        return hidden, weight, hidden.clone(), weight.clone(), T, upstream[0]
    ref_hidden = (hidden.float() + 0.5 * torch.randn(hidden.shape, generator=g)).to(hidden.dtype)
    ref_weight = (weight.float() + 0.3 * weight.float().std() * torch.randn(weight.shape, generator=g)).to(weight.dtype)
    return hidden, weight, ref_hidden, ref_weight, T, upstream[0]


def run_kl_with_grad(fn, hidden, weight, ref_hidden, ref_weight, T, upstream):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    ref_hidden, ref_weight = ref_hidden.detach().requires_grad_(), ref_weight.detach().requires_grad_()
    kl = fn(hidden, weight, ref_hidden, ref_weight, temperature=T)
    (kl * upstream).sum().backward()
    assert ref_hidden.grad is None and ref_weight.grad is None, "the reference must get no gradient"
    return kl.detach(), hidden.grad, weight.grad


def check_kl_against_unfused(fn, case, same=False):
    args = make_kl_case(case, same=same)
    ours = run_kl_with_grad(fn, *args)
    expected = run_kl_with_grad(reference.linear_kl, *args)
    bf16 = args[0].dtype == torch.bfloat16
    for what, a, b in zip(("kl", "grad hidden", "grad weight"), ours, expected):
        rtol, atol = 1e-5, 1e-5
        if bf16 and what.startswith("grad"):  # dL/dz rounded to bf16 before the gradient matmuls (see above)
            rtol, atol = 2 ** -6, 2 ** -6 * b.float().abs().max().item()
        assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
        assert_close(a, b, rtol, atol, f"{case} {what}")
    assert (ours[0] > -1e-5).all(), f"{case}: KL must be >= 0, min {ours[0].min().item():.3g}"
    return ours


@pytest.mark.parametrize("case", ["ragged", "temperature", "leading_dims", "single_token", "bf16"])
def test_linear_kl_triton_matches_unfused(case):
    kl = check_kl_against_unfused(kernels.linear_kl, case)[0]
    assert kl.mean() > 0.05, "the test's reference is too close to the policy to test anything"


@pytest.mark.parametrize("case", ["ragged", "temperature", "bf16"])
def test_linear_kl_chunked_matches_unfused(case):
    def chunked(h, w, hr, wr, temperature):
        return reference.linear_kl_chunked(h, w, hr, wr, temperature=temperature, chunk=4)
    check_kl_against_unfused(chunked, case)


def test_linear_kl_of_a_model_to_itself_is_zero():
    for fn in (kernels.linear_kl, lambda *a, **k: reference.linear_kl_chunked(*a, **k, chunk=4)):
        kl, grad_h, grad_w = check_kl_against_unfused(fn, "ragged", same=True)
        assert kl.abs().max() < 1e-5 and grad_h.abs().max() < 1e-5 and grad_w.abs().max() < 1e-5, \
            f"KL(p || p) = {kl.abs().max().item():.3g}, gradients {grad_h.abs().max().item():.3g}, " \
            f"{grad_w.abs().max().item():.3g}: all should be 0"


def test_linear_kl_checks_shapes():
    hidden, weight, ref_hidden, ref_weight, T, _ = make_kl_case("ragged")
    for fn in (kernels.linear_kl, reference.linear_kl_chunked):
        with pytest.raises(ValueError, match="reference shapes"):
            fn(hidden, weight, ref_hidden[:1], ref_weight)


@pytest.mark.parametrize("case", ["ragged", "temperature", "bf16"])
def test_logprobs_only_matches_unfused(case):
    """kernels.linear_logprobs (log-probs alone: the chunked CPU path skips the entropy, the Triton path takes
    the fused kernel's log-probs) against the unfused log-softmax, values and gradients."""
    hidden, weight, labels, T, upstream = make_case(case)
    zero = [upstream[0], torch.zeros_like(upstream[1])]

    def logp_only(fn):
        def f(h, w, y, temperature):
            logp = fn(h, w, y, temperature=temperature)
            return logp, torch.zeros_like(logp)
        return f
    chunked = logp_only(lambda h, w, y, temperature: reference.linear_logprobs_entropy_chunked(
        h, w, y, temperature=temperature, chunk=4, with_entropy=False)[0])
    expected = run_with_grad(reference.linear_logprobs_entropy, hidden, weight, labels, T, zero)
    for fn in (chunked, logp_only(kernels.linear_logprobs)):
        ours = run_with_grad(fn, hidden, weight, labels, T, zero)
        for what, a, b in zip(("logp", "grad hidden", "grad weight"), (ours[0], *ours[2:]),
                              (expected[0], *expected[2:])):
            rtol, atol = 1e-5, 1e-5
            if hidden.dtype == torch.bfloat16 and what.startswith("grad"):
                rtol, atol = 2 ** -6, 2 ** -6 * b.float().abs().max().item()
            assert_close(a, b, rtol, atol, f"{case} {what}")
