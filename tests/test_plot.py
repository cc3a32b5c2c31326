"""plot.py on small synthetic metrics files: the PNGs it writes (non-empty, the expected size) and the
one-line errors (missing, empty, malformed file; no matplotlib). The frontier sweep: test_frontier.py."""
import json
import os
import struct
import subprocess
import sys

import pytest

import plot  # (plot.py imports matplotlib only when it draws)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@pytest.mark.parametrize("case", ["missing", "empty", "malformed", "not_object"])
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
    else:
        args, expect = [write(tmp_path / "o" / "metrics.jsonl", [[1, 2]])], "line 1: a JSON list"
    r = run_plot(*args, f"--out_dir={tmp_path / 'out'}")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and expect in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not any(p.suffix == ".png" for p in (tmp_path / "out").iterdir())


def test_without_matplotlib_one_line_error(tmp_path):
    p = write(tmp_path / "ppo" / "metrics.jsonl", ppo_rows())
    code = "import sys; sys.modules['matplotlib'] = None; import plot; plot.main(sys.argv[1:])"
    r = subprocess.run([sys.executable, "-c", code, p, f"--out_dir={tmp_path}"], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)  # (python -c imports from its working directory)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: plot.py needs matplotlib to draw (pip install matplotlib); the stages and their metrics.jsonl do not"]


def test_stages_never_import_matplotlib():
    for f in ("sft.py", "reward.py", "ppo.py", "dpo.py", "grpo.py", "sample.py", "model.py", "data.py"):
        assert "matplotlib" not in open(os.path.join(ROOT, f)).read(), f
