"""bench/stages.py must keep running (its GPU numbers go to bench/RESULTS.md): a tiny CPU run."""
import importlib.util

import pytest

from conftest import run


def throughput(line):  # bench/stages.py's fixed-width columns: step 16, impl 20, ms/step 10, throughput 14
    return float(line[46:60])


def x_trl(line):  # ... then 2 + unit 8, peak GiB 9, x TRL 7
    return float(line[79:86])


def test_stage_bench_runs_small_on_cpu():
    out = run("bench/stages.py", "--device=cpu", "--small", "--no-trl").stdout
    for step in ("generate B=1", "generate B=4", "sft", "reward", "ppo update", "grpo update", "grpo step", "dpo"):
        line = next(l for l in out.splitlines() if l.startswith(step + " "))
        assert throughput(line) > 0, line  # a positive throughput


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="optional: pip install trl")
def test_stage_bench_trl_rows():
    out = run("bench/stages.py", "--device=cpu", "--small", "--trl", timeout=900).stdout
    lines = out.splitlines()
    for step, trainer in (("sft", "SFTTrainer"), ("reward", "RewardTrainer"), ("dpo", "DPOTrainer"),
                          ("grpo step", "GRPOTrainer")):
        theirs = next(l for l in lines if l.startswith(step + " ") and f"TRL {trainer}" in l)
        assert throughput(theirs) > 0, theirs
        assert sum(1 for l in lines if l.startswith(step + " ") and f"TRL {trainer}" in l) == 2  # shipped, tuned
        ours = next(l for l in lines if l.startswith(step + " ") and " ours " in l)
        assert x_trl(ours) > 0, ours  # the 'x TRL' column, against TRL's faster row
