"""
Compile every Triton kernel specialisation the wrappers in kernels/ can launch for real GPUs (sm_80, sm_90a),
no GPU needed, and read what the compiler says about each: registers per thread, spill stores / loads (ptxas
-v), shared memory (Triton's metadata + ptxas' static smem) and an occupancy estimate. It stands in for a GPU
until one is at hand: it catches what the interpreter cannot, code the compiler rejects and blocks so large
they spill registers to local memory. Used by tests/test_compile.py and `bench/kernels.py --compile-report`.

Which specialisations: the wrappers themselves (forward and backward through autograd) are driven on small
CPU tensors of every input dtype they accept, with each kernel's launch replaced by a recorder that asks
Triton's own launcher code which signature, constexprs and alignment attributes the launch would compile to
for a CUDA target (then skips running it). So the list follows the wrappers' code: a new flag or block size
there shows up here. UPCAST (an interpreter-only workaround) is recorded as on CUDA tensors, False. Integer
arguments take GPT-2's shapes (V = 50257, d = 768, N a multiple of 16); they only change alignment hints.
Row kernels' BLOCK is min(BLOCK_V, next_power_of_2(V)): the largest, used for every real vocabulary, is
compiled; smaller vocabularies get smaller blocks and fewer registers. Labels are int64 (what torch gives).
"""
import contextlib
import io
import os
import re
from concurrent.futures import ProcessPoolExecutor

import torch

ARCHS = {  # capability -> (name, registers / SM, max warps / SM, max blocks / SM, shared / SM, max shared / block)
    80: ("sm_80", 65536, 64, 32, 167936, 166912),   # A100: 164 KB / SM, 163 KB / block opt-in
    90: ("sm_90a", 65536, 64, 32, 233472, 232448),  # H100: 228 KB / SM, 227 KB / block opt-in
}
DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
V, D, N = 50257, 768, 64


def _modules():
    from . import kl_triton, linear_triton, logprobs_triton
    return {"logprobs_triton": logprobs_triton, "kl_triton": kl_triton, "linear_triton": linear_triton}


def _kernels():
    import triton
    return {(mod, name): fn for mod, m in _modules().items() for name, fn in vars(m).items()
            if isinstance(fn, triton.runtime.JITFunction) and name.endswith("_kernel")}


def _drive_wrappers():
    """Call every wrapper, forward and backward, for each accepted input dtype (16-bit and fp32 logits; every
    pair of policy / reference dtypes for the KLs; mixed hidden / weight dtypes promote to one)."""
    from . import kl_triton, linear_triton, logprobs_triton
    dts = list(DTYPES)
    y = torch.randint(0, V, (2, N // 2))
    for dt in dts:
        for has_labels, has_entropy in [(True, False), (False, True), (True, True)]:
            x = torch.zeros(2, N // 2, V, dtype=dt, requires_grad=True)
            outs = logprobs_triton.LogprobsEntropyFunction.apply(x, y if has_labels else None, -100, 1.0,
                                                                  has_labels, has_entropy, False)
            sum(o.sum() for o in outs).backward()
        for dt_ref in dts:
            x = torch.zeros(2, N // 2, V, dtype=dt, requires_grad=True)
            kl_triton.kl(x, torch.zeros(2, N // 2, V, dtype=dt_ref)).sum().backward()
        h = torch.zeros(2, N // 2, D, dtype=dt, requires_grad=True)
        w = torch.zeros(V, D, dtype=dt, requires_grad=True)
        logp, ent = linear_triton.linear_logprobs_entropy(h, w, y)
        (logp.sum() + ent.sum()).backward()
        linear_triton.linear_kl(h, w, h.detach(), w.detach()).sum().backward()


def specialisations():
    """[(module, kernel, signature, constexprs, attrs, options)], deduplicated, in launch order."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    backend = make_backend(GPUTarget("cuda", 90, 32))
    found, patched = {}, []

    def recorder(mod, name, fn):
        binder = create_function_from_signature(fn.signature, fn.params, backend)

        def run(*args, grid, warmup, **kwargs):
            bound, spec, _ = binder(*args, **kwargs)
            opts, sig, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, backend.parse_options(kwargs))
            names = {(i,): p.name for i, p in enumerate(fn.params)}
            constexprs = {names[k]: (False if names[k] == "UPCAST" else v) for k, v in constexprs.items()}
            options = {k: v for k, v in kwargs.items() if k in ("num_warps", "num_stages")}
            key = (mod, name, repr(sig), repr(constexprs), repr(attrs), repr(options))
            found.setdefault(key, (mod, name, sig, constexprs, attrs, options))
        return run

    for (mod, name), fn in _kernels().items():
        fn.run = recorder(mod, name, fn)
        patched.append(fn)
    try:
        _drive_wrappers()
    finally:
        for fn in patched:
            del fn.run  # back to the class's launcher
    return list(found.values())


_PTXAS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


def _compile_one(job):
    """Compile one (specialisation, capability); returns the row of the report."""
    mod, name, sig, constexprs, attrs, options, cap = job
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = getattr(_modules()[mod], name)
    knobs.nvidia.dump_ptxas_log = True      # Triton already runs `ptxas -v`: print its log...
    knobs.compilation.always_compile = True  # ...which a cache hit would skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        k = triton.compile(ASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", cap, 32), options=options)
    log = out.getvalue()
    regs, spill = _PTXAS.search(log), _SPILL.search(log)
    if regs is None or spill is None:
        raise RuntimeError(f"{name}: no ptxas -v report in Triton's log:\n{log}")
    smem = _SMEM.search(log)
    shared = k.metadata.shared + (int(smem.group(1)) if smem else 0)
    arch, regs_sm, warps_sm, blocks_sm, smem_sm, smem_block = ARCHS[cap]
    nregs, warps = int(regs.group(1)), k.metadata.num_warps
    regs_per_warp = -(-nregs * 32 // 256) * 256  # allocated per warp in units of 256 registers
    blocks = min(blocks_sm, warps_sm // warps, regs_sm // regs_per_warp // warps,
                 smem_sm // (shared + 1024) if shared else blocks_sm)  # 1 KB / block reserved by the driver
    dtypes = "/".join(sig[p][1:] for p in (("X", "Y") if name.startswith("_kl") else ("X", "H")) if p in sig)
    spec = " ".join([dtypes] + [f"{k_}={v}" for k_, v in constexprs.items() if k_ != "UPCAST"])
    return {"kernel": name.strip("_").removesuffix("_kernel"), "spec": spec, "arch": arch, "warps": warps,
            "stages": k.metadata.num_stages, "regs": nregs, "spill_stores": int(spill.group(2)),
            "spill_loads": int(spill.group(3)), "stack": int(spill.group(1)), "shared": shared,
            "shared_limit": smem_block, "occupancy": blocks * warps / warps_sm}


def compile_all(archs=(80, 90), workers=None):
    """Every specialisation for every arch, compiled in parallel (one process per core)."""
    jobs = [(*s, cap) for s in specialisations() for cap in archs]
    workers = workers or len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_compile_one, jobs))


def problems(row):
    """Why a row would fail on the GPU (empty when fine)."""
    out = []
    if row["spill_stores"] or row["spill_loads"]:
        out.append(f"spills {row['spill_stores']} B stores / {row['spill_loads']} B loads")
    if row["shared"] > row["shared_limit"]:
        out.append(f"shared {row['shared']} B > {row['shared_limit']} B per block")
    return out


def table(rows):
    lines = ["| kernel | specialisation | arch | warps / stages | regs | spill st / ld (B) | shared (B) | occupancy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['spec']} | {r['arch']} | {r['warps']} / {r['stages']} | {r['regs']} | "
                     f"{r['spill_stores']} / {r['spill_loads']} | {r['shared']} | {100 * r['occupancy']:.0f}% |")
    return "\n".join(lines)
