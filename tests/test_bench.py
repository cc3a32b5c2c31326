"""bench/stages.py must keep running (its GPU numbers go to bench/RESULTS.md): a tiny CPU run."""
from conftest import run


def test_stage_bench_runs_small_on_cpu():
    out = run("bench/stages.py", "--device=cpu", "--small").stdout
    for step in ("generate B=1", "generate B=4", "sft", "reward", "ppo update", "grpo update", "dpo"):
        line = next(l for l in out.splitlines() if l.startswith(step + " "))
        assert float(line.split()[-3]) > 0, line  # a positive throughput
