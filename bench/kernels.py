"""
Benchmark kernels/ against the usual PyTorch ways of getting per-token log-probs, entropies and KLs
(and, for the fused lm_head, against materialising the logits).

    python bench/kernels.py                          # GPU: the tables for bench/RESULTS.md
    python bench/kernels.py --device=cpu --small     # seconds on CPU: smoke test (tests/test_kernels.py)
    python bench/kernels.py --compile-report         # no GPU needed: every kernel compiled for sm_80 / sm_90a

--compile-report (kernels/compile_report.py; tests/test_compile.py runs it in CI): every Triton kernel
specialisation the wrappers can launch, compiled for sm_80 and sm_90a, with ptxas' registers per thread, spill
stores / loads, shared memory per block and an occupancy estimate (resident warps / 64 per SM, from registers,
shared memory and warps), then the rows that would spill or not fit. Runs on CPU; a GPU is not used.

Table 1, per op and N tokens (logits (N / seq, seq, V), labels uniform over V): median forward time (under
no_grad) and forward+backward time; the achieved bandwidth over the *minimum* traffic of the op (forward: read
the logits once, twice for KL; backward: read them once more and write the gradient once) and that as a % of a
measured device-to-device copy; peak memory allocated on top of the inputs. Table 2, fused lm_head: time,
TFLOP/s over the model FLOPs (2NVd forward, 6NVd forward+backward; our backward really does 8NVd as it
recomputes the logits), peak memory; and the same for the exact KL to a reference model from both models' hidden
states (linear_kl: 4NVd forward, 8NVd forward+backward, no gradient to the reference). On CPU, "ours" is the PyTorch fallback (no Triton), memory is not measured.
"""
import argparse
import datetime
import gc
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernels  # noqa: E402
from kernels import reference  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
p.add_argument("--sizes", default="4096,16384,65536", help="tokens N, comma separated")
p.add_argument("--vocab", type=int, default=50257)
p.add_argument("--seq", type=int, default=1024, help="tokens per sequence")
p.add_argument("--dims", default="768,1600", help="hidden sizes d for the fused lm_head rows")
p.add_argument("--linear-sizes", default="16384,65536", help="tokens N for the fused lm_head rows")
p.add_argument("--ops", default="logprobs,entropy,logprobs_entropy,kl,linear,linear_kl")
p.add_argument("--reps", type=int, default=20)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
               help="include torch.compile rows (default: on for cuda, off for cpu where compiling takes minutes)")
p.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke run")
p.add_argument("--compile-report", action="store_true",
               help="compile every kernel specialisation for sm_80 / sm_90a and print registers, spills, shared memory")
p.add_argument("--json", default=None, help="with --compile-report: also write the rows to this file")
args = p.parse_args()
if args.small:
    args.sizes, args.vocab, args.seq, args.dims, args.linear_sizes = "64,128", 2048, 32, "32", "64"
    args.reps, args.warmup = 2, 1
    torch.set_num_threads(1)  # a smoke run: on a busy shared CPU, multi-threaded tiny ops mostly wait on each other
device = torch.device(args.device)
dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
use_compile = device.type == "cuda" if args.compile is None else args.compile
is_cuda = device.type == "cuda"


# ----------------------------------------------------------------------------- the contenders
def eager_logprobs(x, y):
    return torch.log_softmax(x.float(), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def eager_entropy(x):
    logp = torch.log_softmax(x.float(), -1)
    return -(logp.exp() * logp).sum(-1)


def eager_logprobs_entropy(x, y):
    logp = torch.log_softmax(x.float(), -1)
    return logp.gather(-1, y.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


def eager_kl(x, q):
    logp, ref_logp = torch.log_softmax(x.float(), -1), torch.log_softmax(q.float(), -1)
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def trl_selective_log_softmax(x, y):
    # TRL's selective_log_softmax: a loop over sequences to cap peak memory (16-bit branch: log_softmax per row)
    if x.dtype in (torch.float32, torch.float64):
        lse = torch.stack([torch.logsumexp(row, -1) for row in x])
        return x.gather(-1, y.unsqueeze(-1)).squeeze(-1) - lse
    return torch.stack([torch.log_softmax(row, -1).gather(-1, lab.unsqueeze(-1)).squeeze(-1)
                        for row, lab in zip(x, y)]).float()


def trl_entropy_from_logits(x, chunk=128):
    # TRL's entropy_from_logits: log_softmax over chunks of rows
    flat = x.reshape(-1, x.shape[-1])
    out = [-(lp.exp() * lp).sum(-1) for lp in (torch.log_softmax(c.float(), -1) for c in flat.split(chunk))]
    return torch.cat(out).view(x.shape[:-1])


def eager_linear(h, w, y):
    return eager_logprobs_entropy(h @ w.t(), y)


def eager_linear_kl(h, w, hr, wr):
    return eager_kl(h @ w.t(), (hr @ wr.t()).detach())


def contenders():
    c = {
        "logprobs": [("eager log_softmax + gather", eager_logprobs),
                     ("TRL selective_log_softmax", trl_selective_log_softmax)],
        "entropy": [("eager log_softmax", lambda x, y: eager_entropy(x)),
                    ("TRL entropy_from_logits", lambda x, y: trl_entropy_from_logits(x))],
        "logprobs_entropy": [("eager log_softmax", eager_logprobs_entropy)],
        "kl": [("eager 2x log_softmax", eager_kl)],
        "linear": [("eager logits + log_softmax", eager_linear),
                   ("materialised logits + ours", lambda h, w, y: kernels.logprobs_entropy(h @ w.t(), y)),
                   ("ours chunked PyTorch (the CPU path)", reference.linear_logprobs_entropy_chunked)],
        "linear_kl": [("eager 2x logits + 2x log_softmax", eager_linear_kl),
                      ("materialised logits + ours", lambda h, w, hr, wr: kernels.kl(h @ w.t(), (hr @ wr.t()).detach())),
                      ("ours chunked PyTorch (the CPU path)", reference.linear_kl_chunked)],
    }
    if use_compile:
        for op, fn in [("logprobs", eager_logprobs), ("entropy", lambda x, y: eager_entropy(x)),
                       ("logprobs_entropy", eager_logprobs_entropy), ("kl", eager_kl), ("linear", eager_linear),
                       ("linear_kl", eager_linear_kl)]:
            c[op].append(("torch.compile of eager", torch.compile(fn, dynamic=False)))
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss, LigerFusedLinearCrossEntropyLoss
        ce = LigerCrossEntropyLoss(reduction="none")
        flce = LigerFusedLinearCrossEntropyLoss(reduction="none")
        c["logprobs"].append(("Liger cross_entropy (-loss)",
                              lambda x, y: -ce(x.reshape(-1, x.shape[-1]), y.reshape(-1)).view(y.shape)))
        c["linear"].append(("Liger fused linear CE (logp only)",
                            lambda h, w, y: -flce(w, h.reshape(-1, h.shape[-1]), y.reshape(-1)).view(y.shape)))
    except ImportError:
        print("(liger_kernel not installed: no Liger rows)")
    try:
        from cut_cross_entropy import linear_cross_entropy
        c["linear"].append(("Cut Cross-Entropy (logp only)", lambda h, w, y: -linear_cross_entropy(
            h.reshape(-1, h.shape[-1]), w, y.reshape(-1), reduction="none").view(y.shape)))
    except ImportError:
        print("(cut_cross_entropy not installed: no Cut Cross-Entropy rows)")
    triton_path = kernels.use_triton(torch.empty(0, device=device))
    ours = "ours (Triton)" if triton_path else "ours (PyTorch fallback)"
    c["logprobs"].append((ours, kernels.logprobs))
    c["entropy"].append((ours, lambda x, y: kernels.entropy(x)))
    c["logprobs_entropy"].append((ours, kernels.logprobs_entropy))
    c["kl"].append((ours, kernels.kl))
    if triton_path:
        c["linear"].append(("ours fused (Triton)", kernels.linear_logprobs_entropy))
        c["linear_kl"].append(("ours fused (Triton)", kernels.linear_kl))
    return c


# ----------------------------------------------------------------------------- measuring
def sync():
    if is_cuda:
        torch.cuda.synchronize()


def median_ms(fn):
    for _ in range(args.warmup):
        fn()
    times = []
    for _ in range(args.reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn):
    if not is_cuda:
        return None
    gc.collect()
    torch.cuda.empty_cache()
    sync()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def measure(fn, inputs, grad_inputs):
    """(fwd ms, fwd+bwd ms, fwd peak MiB, fwd+bwd peak MiB) or a short error string."""
    def fwd():
        with torch.no_grad():
            fn(*inputs)

    def fwd_bwd():
        outs = fn(*inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        torch.autograd.grad(sum(o.float().sum() for o in outs), grad_inputs)

    try:
        return median_ms(fwd), median_ms(fwd_bwd), peak_extra_mib(fwd), peak_extra_mib(fwd_bwd)
    except torch.cuda.OutOfMemoryError:
        return "OOM"
    except Exception as e:  # an optional contender that doesn't support this case: say so, keep going
        return f"error: {type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
    finally:
        gc.collect()
        if is_cuda:
            torch.cuda.empty_cache()


def copy_gbps(nbytes):
    src = torch.empty(nbytes // 2, dtype=torch.int16, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / median_ms(lambda: dst.copy_(src)) / 1e6  # read + write


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    V, elt = args.vocab, torch.finfo(dtype).bits // 8
    sizes = [int(s) for s in args.sizes.split(",")]
    ops = args.ops.split(",")
    name = torch.cuda.get_device_name(device) if is_cuda else f"CPU ({os.cpu_count()} cores visible)"
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    copy = copy_gbps(max(sizes) * V * elt)
    print(f"# {name} | torch {torch.__version__} | triton {triton_version} | {args.dtype} | "
          f"{datetime.date.today()} | device-to-device copy {copy:.4g} GB/s")
    c = contenders()
    g = torch.Generator(device=device).manual_seed(0)

    print("\n| op | impl | N | V | fwd ms | fwd GB/s | fwd % copy | fwd+bwd ms | fwd+bwd GB/s | fwd+bwd % copy "
          "| fwd peak MiB | fwd+bwd peak MiB |\n" + "|---" * 12 + "|")
    for op in [o for o in ops if o not in ("linear", "linear_kl")]:
        for n in sizes:
            shape = (max(n // args.seq, 1), min(n, args.seq), V)
            reads = 2 if op == "kl" else 1
            fwd_bytes, bwd_bytes = reads * n * V * elt, (2 * reads + 1) * n * V * elt
            for impl, fn in c[op]:
                # fresh inputs for every contender: Liger writes its gradient into the logits in place
                x = torch.randn(shape, device=device, generator=g).to(dtype).requires_grad_()
                q = (x.detach().float() + torch.randn(shape, device=device, generator=g)).to(dtype)
                y = torch.randint(0, V, shape[:-1], device=device, generator=g)
                r = measure(fn, (x, q if op == "kl" else y), (x,))
                del x, q, y
                if isinstance(r, str):
                    print(f"| {op} | {impl} | {n} | {V} | {r} |")
                    continue
                f_ms, fb_ms, f_mib, fb_mib = r
                f_gbps, fb_gbps = fwd_bytes / f_ms / 1e6, bwd_bytes / fb_ms / 1e6
                print(f"| {op} | {impl} | {n} | {V} | {f_ms:.3f} | {f_gbps:.4g} | {100 * f_gbps / copy:.0f}% | "
                      f"{fb_ms:.3f} | {fb_gbps:.4g} | {100 * fb_gbps / copy:.0f}% | {fmt(f_mib, '.0f')} | "
                      f"{fmt(fb_mib, '.0f')} |")

    if "linear" not in ops and "linear_kl" not in ops:
        return
    print("\n| op | impl | N | d | V | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | fwd peak MiB "
          "| fwd+bwd peak MiB |\n" + "|---" * 11 + "|")
    for d in [int(s) for s in args.dims.split(",")]:
        for n in [int(s) for s in args.linear_sizes.split(",")]:
            shape = (max(n // args.seq, 1), min(n, args.seq))
            h = torch.randn(*shape, d, device=device, generator=g).to(dtype).requires_grad_()
            w = (torch.randn(V, d, device=device, generator=g) * d ** -0.5).to(dtype).requires_grad_()
            y = torch.randint(0, V, shape, device=device, generator=g)
            # the reference: a nearby model (its hidden states and weight perturbed), no gradient
            hr = (h.detach().float() + 0.5 * torch.randn(h.shape, device=device, generator=g)).to(dtype)
            wr = (w.detach().float() + 0.1 * d ** -0.5 * torch.randn(w.shape, device=device, generator=g)).to(dtype)
            mm = 2 * n * V * d  # one (N, d) x (d, V) matmul
            for op, name, inputs, flops in [("linear", "linear_logprobs_entropy", (h, w, y), (mm, 3 * mm)),
                                            ("linear_kl", "linear_kl", (h, w, hr, wr), (2 * mm, 4 * mm))]:
                if op not in ops:
                    continue
                for impl, fn in c[op]:
                    r = measure(fn, inputs, (h, w))
                    if isinstance(r, str):
                        print(f"| {name} | {impl} | {n} | {d} | {V} | {r} |")
                        continue
                    f_ms, fb_ms, f_mib, fb_mib = r
                    print(f"| {name} | {impl} | {n} | {d} | {V} | {f_ms:.3f} | {flops[0] / f_ms / 1e9:.4g} | "
                          f"{fb_ms:.3f} | {flops[1] / fb_ms / 1e9:.4g} | {fmt(f_mib, '.0f')} | {fmt(fb_mib, '.0f')} |")
            del h, w, y, hr, wr


def compile_report():
    import json
    import subprocess
    import triton
    from kernels import compile_report as cr
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    ptxas_version = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    t0 = time.time()
    rows = cr.compile_all()
    print(f"# compile report | triton {triton.__version__} | ptxas {ptxas_version} | {datetime.date.today()} | "
          f"{len(rows)} compilations in {time.time() - t0:.0f} s on {len(os.sched_getaffinity(0))} cores\n")
    print(cr.table(rows))
    bad = [f"{r['kernel']} [{r['spec']}] {r['arch']}: {'; '.join(cr.problems(r))}" for r in rows if cr.problems(r)]
    print("\n" + ("\n".join(bad) if bad else "no spills; shared memory within the per-block limit everywhere"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    compile_report() if args.compile_report else main()
