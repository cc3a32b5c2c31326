"""
The Triton kernels compiled for real GPUs, no GPU needed: `bench/kernels.py --compile-report` compiles every
specialisation the wrappers can launch (kernels/compile_report.py) for sm_80 and sm_90a. This catches what the
interpreter tests cannot: code the GPU compiler rejects, and blocks so large that ptxas spills registers to
local memory or the shared memory does not fit one block. Run in a subprocess: in this process other test
modules may have imported the kernels for Triton's interpreter.
"""
import importlib.util
import json

import pytest

from conftest import run

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
KERNELS = {"logprobs_entropy_fwd", "logprobs_entropy_bwd", "kl_fwd", "kl_bwd", "linear_fwd", "linear_bwd",
           "linear_kl_fwd", "linear_kl_bwd"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile") / "report.json"
    out = run("bench/kernels.py", "--compile-report", f"--json={path}", timeout=1200).stdout
    print(out)
    return json.loads(path.read_text())


def test_every_kernel_dtype_and_flag_is_compiled_for_both_archs(report):
    specs = {(r["kernel"], r["spec"], r["arch"]) for r in report}
    assert len(specs) == len(report)  # no duplicates
    assert {k for k, _, _ in specs} == KERNELS
    for arch in ("sm_80", "sm_90a"):
        got = {(k, s) for k, s, a in specs if a == arch}
        for dt in ("fp32", "bf16", "fp16"):
            for flags in ("HAS_LABELS=True HAS_ENTROPY=False", "HAS_LABELS=False HAS_ENTROPY=True",
                          "HAS_LABELS=True HAS_ENTROPY=True"):
                for k in ("logprobs_entropy_fwd", "logprobs_entropy_bwd"):
                    assert any(k_ == k and s.startswith(dt + " ") and flags in s for k_, s in got), (k, dt, flags, arch)
            for dt_ref in ("fp32", "bf16", "fp16"):  # the reference logits may come in another dtype
                for k in ("kl_fwd", "kl_bwd"):
                    assert any(k_ == k and s.startswith(f"{dt}/{dt_ref} ") for k_, s in got), (k, dt, dt_ref, arch)
            for k in ("linear_fwd", "linear_bwd", "linear_kl_fwd", "linear_kl_bwd"):
                assert any(k_ == k and s.startswith(dt + " ") for k_, s in got), (k, dt, arch)


def test_no_kernel_spills_or_overflows_shared_memory(report):
    bad = []
    for r in report:
        assert r["regs"] > 0 and 0 < r["occupancy"] <= 1, r
        if r["spill_stores"] or r["spill_loads"] or r["shared"] > r["shared_limit"]:
            bad.append(f"{r['kernel']} [{r['spec']}] {r['arch']}: {r['regs']} regs, spills "
                       f"{r['spill_stores']}/{r['spill_loads']} B, shared {r['shared']} B (limit {r['shared_limit']})")
    assert not bad, "\n".join(bad)
