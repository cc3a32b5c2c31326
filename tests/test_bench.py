"""bench/stages.py must keep running (its GPU numbers go to bench/RESULTS.md): a tiny CPU run."""
import importlib.util

import pytest

from conftest import run


def test_stage_bench_runs_small_on_cpu():
    out = run("bench/stages.py", "--device=cpu", "--small", "--no-trl").stdout
    for step in ("generate B=1", "generate B=4", "sft", "reward", "ppo update", "grpo update", "grpo step", "dpo"):
        line = next(l for l in out.splitlines() if l.startswith(step + " "))
        assert float(line.split()[-3]) > 0, line  # a positive throughput


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="optional: pip install trl")
def test_stage_bench_trl_rows():
    out = run("bench/stages.py", "--device=cpu", "--small", "--trl", timeout=900).stdout
    lines = out.splitlines()
    for step, trainer in (("sft", "SFTTrainer"), ("reward", "RewardTrainer"), ("dpo", "DPOTrainer"),
                          ("grpo step", "GRPOTrainer")):
        theirs = next(l for l in lines if l.startswith(step + " ") and f"TRL {trainer}" in l)
        assert float(theirs.split()[-3]) > 0, theirs
        ours = next(l for l in lines if l.startswith(step + " ") and " ours " in l)
        assert float(ours.split()[-1]) > 0, ours  # the 'x TRL' column
