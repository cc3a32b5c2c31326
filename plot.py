"""
plot.py: see any run. Reads the metrics.jsonl every stage writes beside its checkpoint and draws PNGs
(100 dpi); matplotlib is needed here only (pip install matplotlib), never by the stages.

    python plot.py out/ppo/metrics.jsonl                     # every metric of one run over iterations
    python plot.py out/ppo/metrics.jsonl out/grpo/metrics.jsonl out/dpo/metrics.jsonl
                                                             # + gold and RM reward against KL, across runs

One PNG per file (named after the run's folder), one panel per numeric metric (reward, gold, kl, entropy,
response_len first, then the stage's own in the order it logs them), one line per kind of line the stage
logs (PPO's `split` train / test; elsewhere train and eval lines); a metric logged only once is a line of
text in the last panel; best-of-N files (one line per N) are drawn against N. With two or more runs that
log held-out gold and KL, gold_vs_kl.png draws their eval trajectories together (and the RM reward where
logged). A file holding several appended runs (older stages re-ran into it) is read as its last, a resumed
run whole; a missing, empty or malformed file is a one-line error (exit status 2). The frontier sweep's
figures and tables: experiments/frontier.py.
"""
import argparse
import json
import math
import os
import sys

FIRST = ("reward", "gold", "kl", "entropy", "response_len")  # drawn first, in this order
NOT_METRICS = {"time", "iter", "n", "split"}
DPI = 100
PANEL_W, PANEL_H, NCOLS = 3.2, 2.4, 4  # inches per panel of a curves figure, panels per row


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def need_matplotlib():
    try:
        import matplotlib
    except ImportError:
        fail("plot.py needs matplotlib to draw (pip install matplotlib); the stages and their metrics.jsonl do not")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ----------------------------------------------------------------------------- reading
def read_metrics(path):
    """The rows of one metrics.jsonl (dicts), its last run only; a one-line error if there are none."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        lines = raw.decode("utf-8").split("\n")
    except FileNotFoundError:
        fail(f"{path}: no such file (run the stage first; it writes metrics.jsonl into its --out_dir)")
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        fail(f"{path} line {line}: not UTF-8 text; each line must be one JSON object, as the stages write")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"{path} line {i}: not JSON ({e.msg}); each line must be one JSON object, as the stages write")
        if not isinstance(row, dict):
            fail(f"{path} line {i}: a JSON {type(row).__name__}, not an object; each line must be one JSON object")
        rows.append(row)
    if not rows:
        fail(f"{path}: empty, no metrics lines (did the run stop before its first log step?)")
    return whole_run(rows)


def whole_run(rows):
    """The rows of the run a file ends with. A step that goes back to s (a file a stage re-ran into, or one
    resumed before the stages cut metrics.jsonl back to the checkpoint) drops the earlier rows from the first
    at step >= s on, as a resume does now: a resumed run is kept whole, an appended fresh run replaces all."""
    step = lambda r: r.get("iter", r.get("n"))
    kept, last = [], None
    for r in rows:
        s = step(r)
        if numeric(s) and last is not None and s < last:
            kept = kept[:next(i for i, k in enumerate(kept) if numeric(step(k)) and step(k) >= s)]
        last = s if numeric(s) else last
        kept.append(r)
    return kept


def numeric(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def series(rows):
    """Group rows into the kinds of line a stage logs: {label: rows}. PPO labels its lines with
    `split`; the other stages log train lines (they carry the learning rate or a loss) and eval lines."""
    groups = {}
    for r in rows:
        if "split" in r:
            label = str(r["split"])
        elif "n" in r and "iter" not in r:
            label = "best-of-N"
        else:
            label = "train" if ("lr" in r or "loss" in r) else "eval"
        groups.setdefault(label, []).append(r)
    return groups


def metric_names(rows):
    seen = []
    for r in rows:
        for k, v in r.items():
            if k not in NOT_METRICS and numeric(v) and k not in seen:
                seen.append(k)
    return [k for k in FIRST if k in seen] + [k for k in seen if k not in FIRST]


def curves_size(n_metrics):
    """(width, height) in pixels of a curves PNG with this many panels."""
    rows = max(1, math.ceil(n_metrics / NCOLS))
    return round(min(n_metrics, NCOLS) * PANEL_W * DPI), round(rows * PANEL_H * DPI)


# ----------------------------------------------------------------------------- any run
def plot_curves(plt, rows, title, path):
    names = metric_names(rows)
    if not names:
        fail(f"{title}: no numeric metrics to plot")
    once = [k for k in names if sum(numeric(r.get(k)) for r in rows) == 1]  # a line of text, not a panel
    names = [k for k in names if k not in once]
    text = [f"{k} = {r[k]:.4g}" + (f"  (iter {r['iter']})" if "iter" in r else "")
            for k in once for r in rows if numeric(r.get(k))]
    per_panel = 14  # lines of text a panel holds
    n_panels = len(names) + math.ceil(len(text) / per_panel)
    groups = series(rows)
    w, h = curves_size(n_panels)
    fig, axes = plt.subplots(math.ceil(n_panels / NCOLS), min(n_panels, NCOLS), squeeze=False,
                             figsize=(w / DPI, h / DPI), dpi=DPI, layout="constrained")
    for i in range(0, len(text), per_panel):
        ax = axes.flat[len(names) + i // per_panel]
        ax.text(0.0, 1.0, "\n".join((["logged once:"] if i == 0 else []) + text[i:i + per_panel]), va="top",
                ha="left", fontsize=7, family="monospace", transform=ax.transAxes)
    for ax, name in zip(axes.flat, names):
        drawn = []
        for label, rs in groups.items():
            pts = [(r.get("iter", r.get("n")), r[name]) for r in rs if numeric(r.get(name))]
            pts = [(x, y) for x, y in pts if numeric(x)] or [(i, y) for i, (_, y) in enumerate(pts)]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 12 else None, ms=3, lw=1.2, label=label)
                drawn.append(label)
        if "best-of-N" in groups:
            ax.set_xscale("log", base=2)
        if len(drawn) > 1:
            ax.legend(fontsize=7)
        ax.set_title(name if len(drawn) > 1 else f"{name} ({drawn[0]})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")  # the unused panels, and the text panel
    fig.suptitle(f"{title}  (x: {'N' if 'best-of-N' in groups else 'iteration'})", fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def eval_points(rows):
    """The rows that carry a held-out gold score and KL: a run's eval trajectory."""
    return [r for r in rows if numeric(r.get("gold")) and numeric(r.get("kl")) and r.get("split", "test") == "test"
            and "lr" not in r]


def plot_across(plt, runs, path):
    """Gold (solid) and, where logged, RM reward (dashed) against KL, every run's eval trajectory."""
    fig, (ax_g, ax_r) = plt.subplots(1, 2, figsize=(10, 4), dpi=DPI, layout="constrained")
    for i, (name, rows) in enumerate(runs.items()):
        pts = eval_points(rows)
        c = f"C{i % 10}"
        ax_g.plot([r["kl"] for r in pts], [r["gold"] for r in pts], "o-", c=c, ms=3, label=name)
        rew = [r for r in pts if numeric(r.get("reward"))]
        if rew:
            ax_r.plot([r["kl"] for r in rew], [r["reward"] for r in rew], "o--", c=c, ms=3, label=name)
    for ax, what in ((ax_g, "gold score (held out)"), (ax_r, "reward model score (proxy)")):
        ax.set_xlabel("KL to the reference (nats)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def run_name(path, taken):
    d = os.path.dirname(os.path.abspath(path)) if not os.path.isdir(path) else os.path.abspath(path)
    name = os.path.basename(d) or "run"
    base, k = name, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description="Draw PNGs from metrics.jsonl files (see the docstring).")
    ap.add_argument("files", nargs="*", help="metrics.jsonl files (or the run folders holding them)")
    ap.add_argument("--out_dir", default="out/plots", help="where the PNGs go (default out/plots)")
    args = ap.parse_args(argv)
    if not args.files:
        fail("nothing to plot: give metrics.jsonl files (python plot.py out/ppo/metrics.jsonl)")
    runs = {}
    for p in args.files:
        runs[run_name(p, runs)] = read_metrics(p)  # every file read (and checked) before drawing any
    plt = need_matplotlib()
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for name, rows in runs.items():
        written.append(os.path.join(args.out_dir, f"{name}.png"))
        plot_curves(plt, rows, name, written[-1])
    if sum(bool(eval_points(rows)) for rows in runs.values()) >= 2:
        written.append(os.path.join(args.out_dir, "gold_vs_kl.png"))
        plot_across(plt, {k: v for k, v in runs.items() if eval_points(v)}, written[-1])
    for p in written:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
