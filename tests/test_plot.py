"""plot.py on small synthetic metrics files: the PNGs it writes (non-empty, the expected size), the
frontier tables' numbers, and the one-line errors (missing, empty, malformed file; no matplotlib)."""
import json
import os
import struct
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import plot  # noqa: E402  (plot.py imports matplotlib only when it draws)


def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def png_size(path):
    """(width, height) from the PNG's IHDR chunk; fails unless it is a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def run_plot(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "plot.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def ppo_rows(iters=6, kl_per_iter=1.0, peak=3):
    """A PPO-like run: train lines every iteration, test lines every 2; gold peaks, then falls."""
    rows = []
    for it in range(iters + 1):
        gold = 1.0 - 0.1 * (it - peak) ** 2
        if it % 2 == 0:
            rows.append({"time": 0.0, "iter": it, "split": "test", "reward": 0.3 * it, "gold": gold, "parse": 1.0,
                         "ended": 1.0, "response_len": 10.0 - it, "kl": kl_per_iter * it})
        if it:
            rows.append({"time": 0.0, "iter": it, "split": "train", "reward": 0.3 * it, "gold": gold,
                         "kl": kl_per_iter * it, "beta": 0.1, "entropy": 1.0 / it, "policy_loss": -0.01,
                         "clipfrac": 0.1, "response_len": 10.0 - it})
    return rows


def sft_rows():
    return [{"iter": 0, "val_loss": 4.4, "gold": -1.3, "parse": 0.0},
            {"iter": 50, "loss": 2.0, "lr": 1e-3, "ms_per_iter": 50.0},
            {"iter": 100, "loss": 1.5, "lr": 5e-4, "ms_per_iter": 50.0},
            {"iter": 100, "val_loss": 1.2, "gold": 0.0, "parse": 1.0, "ece": 0.01}]  # ece: logged once


def bon_rows(shift=0.0):
    return [{"n": n, "reward": 0.5 * i + shift, "kl": plot.math.log(n) - (n - 1) / n,
             "gold": 0.2 * i - 0.05 * i * i + shift, "parse": 1.0 - 0.1 * i} for i, n in enumerate((1, 2, 4, 8))]


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def test_curves_one_png_per_run_of_the_expected_size(mpl, tmp_path):
    ppo = write(tmp_path / "ppo" / "metrics.jsonl", ppo_rows())
    sft = write(tmp_path / "sft" / "metrics.jsonl", sft_rows())
    bon = write(tmp_path / "sample" / "metrics.jsonl", bon_rows())
    out = tmp_path / "plots"
    r = run_plot(ppo, sft, bon, f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    # PPO: reward gold kl entropy response_len parse ended beta policy_loss clipfrac = 10 panels
    # PPO: reward gold kl entropy response_len parse ended beta policy_loss clipfrac = 10 panels;
    # SFT: gold val_loss parse loss lr ms_per_iter, and a text panel for ece
    for name, n_metrics in (("ppo", 10), ("sft", 7), ("sample", 4)):
        path = out / f"{name}.png"
        assert path.stat().st_size > 10_000, name  # drawn, not a blank canvas
        assert png_size(path) == plot.curves_size(n_metrics), name
    assert plot.curves_size(10) == (1280, 720) and plot.curves_size(3) == (960, 240)
    # ppo and best-of-N have held-out gold and KL: both on one gold/reward-vs-KL figure
    assert png_size(out / "gold_vs_kl.png") == (1000, 400)
    # only one such run (SFT logs no KL): no across-runs figure
    r = run_plot(ppo, sft, f"--out_dir={tmp_path / 'one'}")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "one" / "ppo.png").exists() and not (tmp_path / "one" / "gold_vs_kl.png").exists()


def test_metric_order_and_series():
    rows = ppo_rows()
    names = plot.metric_names(rows)
    assert names[:5] == ["reward", "gold", "kl", "entropy", "response_len"]
    assert "iter" not in names and "time" not in names and "split" not in names
    assert set(plot.series(rows)) == {"train", "test"}
    assert set(plot.series(sft_rows())) == {"train", "eval"}
    assert set(plot.series(bon_rows())) == {"best-of-N"}


def test_appended_runs_read_as_the_last(tmp_path):
    p = write(tmp_path / "m.jsonl", ppo_rows(iters=4) + ppo_rows(iters=2, kl_per_iter=5.0))
    rows = plot.read_metrics(p)
    assert max(r["iter"] for r in rows) == 2 and rows[-1]["kl"] == 10.0


def make_sweep(root):
    write(root / "sft" / "metrics.jsonl", sft_rows())
    write(root / "bon_s1" / "metrics.jsonl", bon_rows(0.0))
    write(root / "bon_s2" / "metrics.jsonl", bon_rows(0.2))
    write(root / "ppo_kl1" / "metrics.jsonl", ppo_rows(iters=4, kl_per_iter=0.25))
    write(root / "ppo_kl4" / "metrics.jsonl", ppo_rows(iters=4, kl_per_iter=1.0))
    write(root / "ppo_beta0" / "metrics.jsonl", ppo_rows(iters=10, kl_per_iter=5.0, peak=2))
    for b, kl in (("0.1", 6.0), ("0.5", 2.0)):
        write(root / f"dpo_beta{b}" / "metrics.jsonl",
              [{"iter": 0, "gold": 0.0, "kl": 0.0, "parse": 1.0, "val_rewards/accuracies": 0.5},
               {"iter": 10, "loss": 0.6, "lr": 1e-4},
               {"iter": 20, "gold": 0.4, "kl": kl, "parse": 0.8, "val_rewards/accuracies": 0.7}])
    write(root / "grpo_kl0.02" / "metrics.jsonl",
          [{"iter": 0, "gold": 0.0, "kl": 0.0, "parse": 1.0}, {"iter": 5, "reward": 1.5, "lr": 3e-4},
           {"iter": 10, "gold": 0.9, "kl": 3.0, "parse": 0.95}])
    (root / "times.tsv").write_text("run\tseconds\nsft\t60\nbon_s1\t20\ntotal\t80\n")


def test_frontier_figures_and_tables(mpl, tmp_path):
    make_sweep(tmp_path / "sweep")
    out = tmp_path / "figs"
    r = run_plot(f"--frontier={tmp_path / 'sweep'}", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    for name, size in (("frontier_gold_vs_kl", (800, 500)), ("frontier_gao", (1000, 420)),
                       ("frontier_beta0", (800, 550))):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
        assert png_size(out / f"{name}.png") == size, name
    md = (out / "frontier.md").read_text()
    assert md.strip() in r.stdout
    # best-of-N: the mean of the two seeds, their standard error, and where gold peaks (i = 2: N = 4)
    assert "| 4 | 0.64 | 0.80 | 1.10 +- 0.10 | 0.30 +- 0.10 | 0.80 |" in md
    assert "Gold peaks at N = 4 (0.30)" in md
    # PPO beta = 0: evals at 0, 2, .., 10 at KL 5 per iteration; gold peaks at iteration 2 (KL 10)
    assert "| beta = 0 | 10 | 50.00 | 3.00 | -5.40 | 1.00 | 1.00 (10.00) | 0.100 |" in md
    assert "| gold | 0.60 | 1.00 | 0.60 | -0.60 | -2.60 | -5.40 |" in md
    assert "| 0.5 | 20 | 2.00 | 0.40 | 0.80 | 0.40 (2.00) | 0.700 |" in md  # DPO beta 0.5, final eval
    assert "| 0.02 | 10 | 3.00 | 0.90 | 0.95 | 0.90 (3.00) | 1.50 |" in md  # GRPO: final eval, last train reward
    assert "| sft | bon_s1 | total |" in md and "| 60 | 20 | 80 |" in md


@pytest.mark.parametrize("case", ["missing", "empty", "malformed", "not_object", "no_sweep"])
def test_bad_input_is_one_line_and_status_2(tmp_path, case):
    if case == "missing":
        args, expect = [str(tmp_path / "nope" / "metrics.jsonl")], "no such file"
    elif case == "empty":
        args, expect = [write(tmp_path / "e" / "metrics.jsonl", [])], "empty"
    elif case == "malformed":
        p = write(tmp_path / "m" / "metrics.jsonl", sft_rows()[:1])
        with open(p, "a") as f:
            f.write('{"iter": 1, "loss": \n')
        args, expect = [p], "line 2: not JSON"
    elif case == "not_object":
        args, expect = [write(tmp_path / "o" / "metrics.jsonl", [[1, 2]])], "line 1: a JSON list"
    else:
        (tmp_path / "sweep").mkdir()
        args, expect = [f"--frontier={tmp_path / 'sweep'}"], "no frontier runs"
    r = run_plot(*args, f"--out_dir={tmp_path / 'out'}")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and expect in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not any(p.suffix == ".png" for p in (tmp_path / "out").iterdir())


def test_without_matplotlib_one_line_error(tmp_path):
    p = write(tmp_path / "ppo" / "metrics.jsonl", ppo_rows())
    code = ("import sys; sys.modules['matplotlib'] = None; sys.path.insert(0, sys.argv[1]); import plot; "
            "plot.main(sys.argv[2:])")
    r = subprocess.run([sys.executable, "-c", code, ROOT, p, f"--out_dir={tmp_path}"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: plot.py needs matplotlib to draw (pip install matplotlib); the stages and their metrics.jsonl do not"]


def test_stages_never_import_matplotlib():
    for f in ("sft.py", "reward.py", "ppo.py", "dpo.py", "grpo.py", "sample.py", "model.py", "data.py"):
        assert "matplotlib" not in open(os.path.join(ROOT, f)).read(), f


def test_frontier_sh_arguments(tmp_path):
    sh = os.path.join(ROOT, "frontier.sh")
    assert subprocess.run(["bash", "-n", sh]).returncode == 0
    r = subprocess.run(["bash", sh, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "bash frontier.sh --quick" in r.stdout
    r = subprocess.run(["bash", sh, "--fast"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown argument --fast (use --quick or nothing)"
    # it starts from nothing (rm -rf OUT), but never deletes a folder it did not write
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = subprocess.run(["bash", sh, "--quick"], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "OUT": str(tmp_path / "mine")})
    assert r.returncode == 2 and "is not a frontier.sh output folder" in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
