"""
kernels/ on CPU: the Triton kernels run through Triton's interpreter and are checked (forward and
gradients) against the plain PyTorch definitions in kernels/reference.py; plus the reference fallback,
kl_estimate, and a smoke run of bench/kernels.py. Shapes are small: the interpreter is slow.
"""
import os

# @triton.jit (ours and triton.language's own helpers) decides "compile" vs "interpret" when it is defined,
# so TRITON_INTERPRET=1 must be set before triton is first imported. We import the kernel modules now and
# then unset it again, so that other test modules (and the subprocesses they start) don't inherit it; the
# fixture below turns it on only while this module's tests run.
_ENV = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import kernels  # noqa: E402
from kernels import kl_triton, logprobs_triton, reference  # noqa: E402


def _restore_env():
    if _ENV is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _ENV


_restore_env()
# The interpreter evaluates both sides of tl.where in numpy, e.g. (-inf) - (-inf) on masked vocab entries whose
# result where() then discards; numpy warns about the discarded NaNs.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def triton_interpreter():
    assert type(logprobs_triton._logprobs_entropy_fwd_kernel).__name__ == "InterpretedFunction", (
        "triton was imported before TRITON_INTERPRET=1 was set (some earlier import pulled it in); "
        "run this file on its own or import it first")
    os.environ["TRITON_INTERPRET"] = "1"  # the interpreter checks it again at launch
    kernels.INTERPRET = True  # CPU tensors take the Triton path
    blocks = logprobs_triton.BLOCK_V, kl_triton.BLOCK_V
    # 256-wide vocabulary blocks: at V = 1000 the loop runs 3 full blocks and a ragged tail of 232
    logprobs_triton.BLOCK_V = kl_triton.BLOCK_V = 256
    yield
    logprobs_triton.BLOCK_V, kl_triton.BLOCK_V = blocks
    kernels.INTERPRET = _ENV == "1"
    _restore_env()


def assert_close(actual, expected, rtol, atol, what):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    ok = torch.isclose(actual.float(), expected.float(), rtol=rtol, atol=atol, equal_nan=False)
    err = (actual.float() - expected.float()).abs().nan_to_num(float("inf"))
    assert ok.all(), f"{what}: max abs error {err.max().item():.3g} (rtol={rtol}, atol={atol}), " \
                     f"{(~ok).sum().item()} of {ok.numel()} off"


# name -> (leading shape, V, dtype, logit scale, temperature, how to build the logits)
CASES = {
    "ragged_vocab": ((3, 2), 1000, torch.float32, 1.0, 1.0, None),  # 3 blocks + a tail of 232
    "big_vocab": ((2, 2), 3001, torch.float32, 3.0, 1.0, None),  # 11 blocks + a tail of 185
    "vocab_1": ((5,), 1, torch.float32, 1.0, 1.0, None),
    "single_row": ((1,), 777, torch.float32, 1.0, 1.0, None),
    "leading_dims": ((2, 2, 2), 300, torch.float32, 1.0, 1.0, None),
    "sliced_view": ((2, 3), 500, torch.float32, 1.0, 1.0, "slice"),  # logits[:, :-1]: strided rows, no copy
    "transposed": ((2, 3), 500, torch.float32, 1.0, 1.0, "transpose"),  # vocab not unit-stride: copied
    "huge_logits": ((3, 2), 1000, torch.float32, 1e4, 1.0, None),
    "masked_vocab": ((3, 2), 1000, torch.float32, 1.0, 1.0, "mask"),  # -inf logits, incl. a whole block
    "all_ignored": ((2, 3), 300, torch.float32, 1.0, 1.0, "ignore_all"),
    "temperature_0.7": ((3, 2), 1000, torch.float32, 1.0, 0.7, None),
    "temperature_1.5": ((3, 2), 1000, torch.float32, 5.0, 1.5, None),
    "bf16": ((3, 2), 1000, torch.bfloat16, 3.0, 1.0, None),
    "fp16": ((3, 2), 1000, torch.float16, 3.0, 1.0, None),
}


def make_case(name, seed=0):
    lead, V, dtype, scale, T, how = CASES[name]
    g = torch.Generator().manual_seed(seed)
    if how == "slice":
        x = (torch.randn(lead[0], lead[1] + 1, V, generator=g) * scale).to(dtype)[:, :-1]
        ref = (torch.randn(lead[0], lead[1] + 1, V, generator=g) * scale).to(dtype)[:, 1:]
    elif how == "transpose":
        x = (torch.randn(lead[0], V, lead[1], generator=g) * scale).to(dtype).transpose(1, 2)
        ref = x + 0.5 * torch.randn(x.shape, generator=g).to(dtype)
    else:
        x = (torch.randn(*lead, V, generator=g) * scale).to(dtype)
        ref = (x.float() + 0.5 * scale * torch.randn(x.shape, generator=g)).to(dtype)
    labels = torch.randint(0, V, lead, generator=g)
    labels.view(-1)[1::3] = -100  # some ignored positions in every case
    if how == "ignore_all":
        labels.fill_(-100)
    if how == "mask":  # masked vocab: every 7th token, and the whole first block of row 0
        x, ref = x.clone(), ref.clone()
        x[..., ::7] = ref[..., ::7] = float("-inf")
        x.view(-1, V)[0, :130] = ref.view(-1, V)[0, :130] = float("-inf")
        allowed = (x.view(-1, V) > float("-inf")).float()
        labels.view(-1)[:] = torch.multinomial(allowed, 1, generator=g).view(-1).masked_fill(labels.view(-1) < 0, -100)
    return x, labels, ref, T


def tolerances(name):
    dtype, scale = CASES[name][2], CASES[name][3]
    # Outputs: both sides compute in fp32 from the same inputs; they differ only by summation order, i.e.
    # ~1e-6 relative to the largest quantity in the row (|x| ~ scale: 1e4 logits give ~1e-3 absolute).
    fwd = (1e-5, 2e-5 * max(1.0, scale / 10))
    # Gradients come back in the logits' dtype: a 16-bit gradient is rounded once from fp32 on each side,
    # so they may be one unit in the last place apart (2^-7 relative for bf16, 2^-10 for fp16).
    bwd = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2 ** -7, 1e-5), torch.float16: (2 ** -10, 1e-5)}[dtype]
    return fwd, bwd


OPS = {  # op -> f(module, logits, labels, ref_logits, T) -> tuple of outputs
    "logprobs": lambda m, x, y, q, T: (m.logprobs(x, y, temperature=T),),
    "entropy": lambda m, x, y, q, T: (m.entropy(x, temperature=T),),
    "logprobs_entropy": lambda m, x, y, q, T: tuple(m.logprobs_entropy(x, y, temperature=T)),
    "kl": lambda m, x, y, q, T: (m.kl(x, q, temperature=T),),
}


def run_with_grad(module, op, x, labels, ref, T, upstream):
    x = x.detach().requires_grad_()
    outs = OPS[op](module, x, labels, ref, T)
    sum((o * g).sum() for o, g in zip(outs, upstream)).backward()
    return outs, x.grad


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", list(OPS))
def test_matches_reference(op, case):
    x, labels, ref, T = make_case(case)
    upstream = [torch.randn(labels.shape, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    outs, grad = run_with_grad(kernels, op, x, labels, ref, T, upstream)
    ref_outs, ref_grad = run_with_grad(reference, op, x, labels, ref, T, upstream)
    assert "Function" in type(outs[0].grad_fn).__name__, "the Triton path was not taken"
    (frtol, fatol), (brtol, batol) = tolerances(case)
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert o.dtype == torch.float32
        assert_close(o.detach(), r.detach(), frtol, fatol, f"{op}[{case}] output {i}")
    assert grad.dtype == x.dtype and torch.isfinite(grad).all(), f"{op}[{case}]: non-finite gradient"
    assert_close(grad, ref_grad, brtol, batol, f"{op}[{case}] grad")
    if op == "logprobs":  # ignored positions: logp exactly 0 and exactly zero gradient
        ignored = labels == -100
        assert (outs[0][ignored] == 0).all() and (grad[ignored] == 0).all()


def test_sampled_logprobs_average_to_minus_entropy():
    # E_{v ~ softmax(x / T)}[log p(v)] = -H: ties logprobs, entropy and the temperature convention to
    # what sampling actually does. Monte Carlo error: 5 standard errors of the sample mean.
    g = torch.Generator().manual_seed(0)
    rows, V, T, S = 2, 100, 0.8, 20000
    x = torch.randn(rows, V, generator=g) * 2
    samples = torch.multinomial(torch.softmax(x / T, -1), S, replacement=True, generator=g)
    # log-probs of every token via our kernel (expand: rows x V copies of each row, stride 0, not copied)
    table = kernels.logprobs(x[:, None, :].expand(rows, V, V), torch.arange(V).expand(rows, V), temperature=T)
    logp = table.gather(1, samples)
    ent = kernels.entropy(x, temperature=T)
    err = (logp.mean(1) + ent).abs()
    bound = 5 * logp.std(1) / S ** 0.5
    assert (err < bound).all(), f"|mean log p + H| = {err.tolist()} vs bound {bound.tolist()}"


def test_logprobs_entropy_consistent_with_separate_calls():
    x, labels, _, T = make_case("temperature_0.7")
    lp, ent = kernels.logprobs_entropy(x, labels, temperature=T)
    assert_close(lp, kernels.logprobs(x, labels, temperature=T), 0, 1e-6, "logp")
    assert_close(ent, kernels.entropy(x, temperature=T), 0, 1e-6, "entropy")


def test_custom_ignore_index():
    x, labels, _, _ = make_case("ragged_vocab")
    labels = labels.masked_fill(labels == -100, 7777)
    assert_close(kernels.logprobs(x, labels, ignore_index=7777), reference.logprobs(x, labels, 7777), 1e-5, 1e-5,
                 "logprobs with ignore_index=7777")


@pytest.mark.parametrize("op", ["logprobs_entropy", "kl"])
def test_inplace_backward(op):
    x, labels, ref, T = make_case("ragged_vocab")
    upstream = [torch.randn(labels.shape) for _ in range(2)]
    _, expected = run_with_grad(kernels, op, x, labels, ref, T, upstream)
    leaf = torch.zeros_like(x, requires_grad=True)
    logits = leaf + x  # a non-leaf buffer the caller no longer needs after backward
    fn = {"logprobs_entropy": lambda: kernels.logprobs_entropy(logits, labels, inplace_backward=True),
          "kl": lambda: (kernels.kl(logits, ref, inplace_backward=True),)}[op]
    outs = fn()
    sum((o * g).sum() for o, g in zip(outs, upstream)).backward()
    assert_close(leaf.grad, expected, 0, 0, f"{op} in-place gradient")
    assert_close(logits.detach(), expected, 0, 0, f"{op}: gradient written into the logits buffer")


def test_kl_of_identical_distributions_is_zero_and_kl_nonnegative():
    x, _, ref, _ = make_case("ragged_vocab")
    assert kernels.kl(x, x).abs().max() < 1e-5
    assert (kernels.kl(x, ref) > -1e-6).all()


def test_reference_fallback_without_interpreter(monkeypatch):
    monkeypatch.setattr(kernels, "INTERPRET", False)
    x, labels, ref, T = make_case("temperature_0.7")
    x.requires_grad_()
    for out in (kernels.logprobs(x, labels, temperature=T), kernels.entropy(x, temperature=T),
                kernels.logprobs_entropy(x, labels, temperature=T)[1], kernels.kl(x, ref, temperature=T)):
        assert "Function" not in type(out.grad_fn).__name__, "expected the reference path on CPU"
    assert_close(kernels.logprobs(x, labels, temperature=T), reference.logprobs(x, labels, temperature=T), 0, 0, "")


def test_import_and_run_without_triton_interpreter():
    # A fresh process, no TRITON_INTERPRET: `import kernels` must not import triton, and CPU tensors go to the
    # reference path.
    code = ("import sys, torch, kernels; x = torch.randn(3, 50, requires_grad=True); y = torch.tensor([1, -100, 3]);"
            "lp, h = kernels.logprobs_entropy(x, y); (lp.sum() + h.sum() + kernels.kl(x, x + 1).sum()).backward();"
            "assert 'triton' not in sys.modules; print('ok', torch.isfinite(x.grad).all().item())")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok True" in res.stdout, res.stdout + res.stderr


def test_kl_estimate_hand_values():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref_logp = torch.tensor([-2.0, -1.0, -0.5])
    # log r = ref_logp - logp = [-1, 1, 0]
    assert_close(kernels.kl_estimate(logp, ref_logp, "k1"), torch.tensor([1.0, -1.0, 0.0]), 0, 1e-7, "k1")
    assert_close(kernels.kl_estimate(logp, ref_logp, "k2"), torch.tensor([0.5, 0.5, 0.0]), 0, 1e-7, "k2")
    e = torch.e
    k3 = torch.tensor([1 / e - 1 + 1, e - 1 - 1, 0.0])  # r - 1 - log r
    assert_close(kernels.kl_estimate(logp, ref_logp, "k3"), k3, 0, 1e-6, "k3")
    with pytest.raises(ValueError):
        kernels.kl_estimate(logp, ref_logp, "k4")


def test_kl_estimate_k3_nonnegative_and_clamped():
    g = torch.Generator().manual_seed(0)
    logp = (torch.randn(1000, generator=g) * 30).requires_grad_()
    ref_logp = torch.randn(1000, generator=g) * 30
    k3 = kernels.kl_estimate(logp, ref_logp, "k3")
    assert (k3 >= 0).all()
    extreme = torch.tensor([-1000.0, 0.0, 1000.0], requires_grad=True)
    out = kernels.kl_estimate(extreme, torch.tensor([0.0, -1000.0, -1000.0]), "k3")
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(extreme.grad).all(), (out, extreme.grad)
    assert_close(out[0], torch.tensor(torch.e ** 20 - 20 - 1), 1e-6, 0, "k3 clamped at log r = 20")
    (k3.sum()).backward()
    assert torch.isfinite(logp.grad).all()


def test_bench_runs_on_cpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "bench/kernels.py", "--device=cpu", "--small"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    for word in ("| op", "eager", "ours", "logprobs", "entropy", "kl", "linear_logprobs_entropy", "| linear_kl |",
                 "GB/s"):
        assert word in res.stdout, f"{word!r} missing from the bench table:\n{res.stdout}\n{res.stderr}"
    assert "error:" not in res.stdout, res.stdout  # every contender of this CPU run must run
