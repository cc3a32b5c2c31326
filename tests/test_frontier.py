"""experiments/frontier.py on a small synthetic sweep: its three PNGs (non-empty, the expected size), the
numbers of its tables, its one-line errors; and experiments/frontier.sh's arguments."""
import os
import subprocess
import sys

import pytest

from test_plot import bon_rows, png_size, ppo_rows, sft_rows, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_frontier(*args):
    return subprocess.run([sys.executable, "-m", "experiments.frontier", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def make_sweep(root):
    write(root / "sft" / "metrics.jsonl", sft_rows())
    for seed, shift, syc in ((1, 0.0, 0.1), (2, 0.2, 0.3)):  # the signs of hacking, averaged over the seeds too
        write(root / f"bon_s{seed}" / "metrics.jsonl", [dict(r, sycophancy=syc, response_len=20 + 10 * shift, reads_prompt=0.5)
                                                       for r in bon_rows(shift)])
    write(root / "ppo_kl1" / "metrics.jsonl", ppo_rows(iters=4, kl_per_iter=0.25))
    write(root / "ppo_kl4" / "metrics.jsonl", ppo_rows(iters=4, kl_per_iter=1.0))
    write(root / "ppo_beta0" / "metrics.jsonl", ppo_rows(iters=10, kl_per_iter=5.0, peak=2))
    for b, kl in (("0.1", 6.0), ("0.5", 2.0)):
        write(root / f"dpo_beta{b}" / "metrics.jsonl",
              [{"iter": 0, "gold": 0.0, "kl": 0.0, "parse": 1.0, "val_rewards/accuracies": 0.5},
               {"iter": 10, "loss": 0.6, "lr": 1e-4},
               {"iter": 20, "gold": 0.4, "kl": kl, "parse": 0.8, "val_rewards/accuracies": 0.7, "sycophancy": 0.25,
                "response_len": 31.0, "reads_prompt": 0.5}])
    write(root / "grpo_kl0.02" / "metrics.jsonl",
          [{"iter": 0, "gold": 0.0, "kl": 0.0, "parse": 1.0}, {"iter": 5, "reward": 1.5, "lr": 3e-4},
           {"iter": 10, "gold": 0.9, "kl": 3.0, "parse": 0.95}])
    (root / "times.tsv").write_text("run\tseconds\nsft\t60\nbon_s1\t20\ntotal\t80\n")


def test_frontier_figures_and_tables(tmp_path):
    pytest.importorskip("matplotlib")
    make_sweep(tmp_path / "sweep")
    out = tmp_path / "figs"
    r = run_frontier(f"--root={tmp_path / 'sweep'}", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    for name, size in (("frontier_gold_vs_kl", (800, 500)), ("frontier_gao", (1000, 420)),
                       ("frontier_beta0", (800, 550))):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
        assert png_size(out / f"{name}.png") == size, name
    md = (out / "frontier.md").read_text()
    assert md.strip() in r.stdout
    # best-of-N: the mean of the two seeds, their standard error, and where gold peaks (i = 2: N = 4)
    assert "| 4 | 0.64 | 0.80 | 1.10 +- 0.10 | 0.30 +- 0.10 | 0.80 | 0.20 | 21.0 | 0.50 |" in md
    assert "Gold peaks at N = 4 (0.30)" in md
    # PPO beta = 0: evals at 0, 2, .., 10 at KL 5 per iteration; gold peaks at iteration 2 (KL 10)
    assert "| beta = 0 | 10 | 50.00 | 3.00 | -5.40 | 1.00 | 1.00 (10.00) | 0.100 |" in md
    assert "| gold | 0.60 | 1.00 | 0.60 | -0.60 | -2.60 | -5.40 |" in md
    assert "| 0.5 | 20 | 2.00 | 0.40 | 0.80 | 0.40 (2.00) | 0.700 | 0.25 | 31.0 | 0.50 |" in md  # DPO beta 0.5, final eval
    assert "| beta = 0 | 10 | 50.00 | 3.00 | -5.40 | 1.00 | 1.00 (10.00) | 0.100 | - | 0.0 | - |" in md  # signs not logged: -
    assert "| 0.02 | 10 | 3.00 | 0.90 | 0.95 | 0.90 (3.00) | 1.50 |" in md  # GRPO: final eval, last train reward
    assert "| sft | bon_s1 | total |" in md and "| 60 | 20 | 80 |" in md


@pytest.mark.parametrize("case", ["no_folder", "no_sweep"])
def test_bad_root_is_one_line_and_status_2(tmp_path, case):
    (tmp_path / "sweep").mkdir()
    root, expect = {"no_folder": (tmp_path / "nope", "no such folder"),
                    "no_sweep": (tmp_path / "sweep", "no frontier runs")}[case]
    r = run_frontier(f"--root={root}", f"--out_dir={tmp_path / 'out'}")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and expect in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_frontier_sh_arguments(tmp_path):
    sh = os.path.join(ROOT, "experiments", "frontier.sh")
    assert subprocess.run(["bash", "-n", sh]).returncode == 0
    r = subprocess.run(["bash", sh, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "bash experiments/frontier.sh --quick" in r.stdout
    assert r.stdout.startswith("The RLHF frontier") and "set -euo" not in r.stdout  # the header, all of it, only
    assert r.stdout.rstrip().endswith("the value of Ziegler et al.")
    r = subprocess.run(["bash", sh, "--fast"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown argument --fast (use --quick or nothing)"
    # it starts from nothing (rm -rf OUT), but never deletes a folder it did not write
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = subprocess.run(["bash", sh, "--quick"], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "OUT": str(tmp_path / "mine")})
    assert r.returncode == 2 and "is not a frontier.sh output folder" in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
