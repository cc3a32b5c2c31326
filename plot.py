"""
plot.py: see any run. Reads the metrics.jsonl that every stage writes beside its checkpoint and draws
PNGs; matplotlib is needed here only (pip install matplotlib), never by the stages.

    python plot.py out/ppo/metrics.jsonl                     # every metric of one run over iterations
    python plot.py out/ppo/metrics.jsonl out/grpo/metrics.jsonl out/dpo/metrics.jsonl
                                                             # + gold and RM reward against KL, across runs
    python plot.py --frontier=out/frontier --out_dir=figures # frontier.sh's three figures and their tables

Curves: one PNG per file (named after the run's folder), one panel per numeric metric (reward, gold,
kl, entropy, response_len first, then the stage's own in the order it logs them), one line per kind
of line the stage logs (PPO's `split` train / test; elsewhere train lines and eval lines); a metric
logged only once (reward.py's final calibration, the feedback counts) is a line of text in the last
panel. Best-of-N
files (one line per N) are drawn against N. With two or more files that have held-out gold and KL,
gold_vs_kl.png puts every run's eval trajectory on one plot (and the RM reward where the run logs it).
A file that holds several runs appended one after another (a stage re-run into the same out_dir) is
read as its last run. Figures are PNGs at 100 dpi; a missing, empty or malformed file is a one-line
error (exit status 2).

--frontier reads the runs frontier.sh writes (bon_s*, ppo_kl*, ppo_beta0, dpo_beta*, grpo_kl*, times.tsv)
and draws (a) frontier_gold_vs_kl.png: held-out gold score against KL to the SFT model for every
method (Stiennon et al. 2020 Fig. 2, Rafailov et al. 2023 Fig. 2); (b) frontier_gao.png: RM (proxy)
and gold score against sqrt(KL) for best-of-N and PPO (Gao et al. 2022 Fig. 1); (c)
frontier_beta0.png: the beta = 0 PPO run's proxy and gold over iterations, with its KL and parse
rate. The numbers behind them go to frontier.md (markdown tables) and stdout.
"""
import argparse
import glob
import json
import math
import os
import re
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
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        fail(f"{path}: no such file (run the stage first; it writes metrics.jsonl into its --out_dir)")
    except OSError as e:
        fail(f"{path}: {e.strerror}")
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
    step = lambda r: r.get("iter", r.get("n", 0))
    start = 0
    for i in range(1, len(rows)):  # a step that goes backwards starts a new (appended) run
        if isinstance(step(rows[i]), (int, float)) and isinstance(step(rows[i - 1]), (int, float)) \
                and step(rows[i]) < step(rows[i - 1]):
            start = i
    return rows[start:]


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


# ----------------------------------------------------------------------------- the frontier sweep
def mean_se(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def param(name, prefix):
    return float(name[len(prefix):])


def load_sweep(root):
    """frontier.sh's runs, by method. Each run: (hyperparameter, rows)."""
    if not os.path.isdir(root):
        fail(f"{root}: no such folder (run bash frontier.sh first, or give --frontier=its OUT folder)")
    runs = {}
    for d in sorted(glob.glob(os.path.join(root, "*", "metrics.jsonl"))):
        runs[os.path.basename(os.path.dirname(d))] = read_metrics(d)
    pick = lambda prefix: sorted(((param(k, prefix), v) for k, v in runs.items()
                                  if re.fullmatch(re.escape(prefix) + r"[0-9.]+", k)), key=lambda t: t[0])
    sweep = dict(bon=pick("bon_s"), ppo=pick("ppo_kl"), dpo=pick("dpo_beta"), grpo=pick("grpo_kl"),
                 beta0=runs.get("ppo_beta0"), sft=runs.get("sft"), reward=runs.get("reward"))
    if not sweep["bon"] and not sweep["ppo"] and not sweep["beta0"]:
        fail(f"{root}: no frontier runs in it (bon_s*/, ppo_kl*/, ppo_beta0/ with metrics.jsonl); run bash frontier.sh")
    times = {}
    tpath = os.path.join(root, "times.tsv")
    if os.path.exists(tpath):
        for line in open(tpath, encoding="utf-8").read().splitlines()[1:]:
            k, _, v = line.partition("\t")
            if v.strip().isdigit():
                times[k] = int(v)
    sweep["times"] = times
    return sweep


def bon_table(bon):
    """Best-of-N averaged over seeds: rows of (n, kl, reward, reward_se, gold, gold_se, parse)."""
    by_n = {}
    for _, rows in bon:
        for r in rows:
            if "n" in r:
                by_n.setdefault(r["n"], []).append(r)
    out = []
    for n in sorted(by_n):
        rs = by_n[n]
        rew, rew_se = mean_se([r["reward"] for r in rs])
        g, g_se = mean_se([r["gold"] for r in rs])
        out.append(dict(n=n, kl=rs[0]["kl"], reward=rew, reward_se=rew_se, gold=g, gold_se=g_se,
                        parse=sum(r.get("parse", float("nan")) for r in rs) / len(rs), seeds=len(rs)))
    return out


def final(rows):
    pts = eval_points(rows)
    return pts[-1] if pts else None


def fmt(v, nd=2):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def tables(sw):
    """The numbers behind the three figures, as markdown."""
    md = []
    bon = bon_table(sw["bon"])
    if bon:
        seeds = bon[0]["seeds"]
        peak = max(bon, key=lambda r: r["gold"])
        md += [f"**Best-of-N** (reward model picks 1 of N SFT samples; 50 held-out prompts x {seeds} seed(s); "
               f"{'mean +- standard error over seeds; ' if seeds > 1 else ''}KL analytic, log N - (N-1)/N). "
               f"Gold peaks at N = {peak['n']} ({peak['gold']:.2f}).", "",
               "| N | KL | sqrt KL | proxy (RM) | gold | parse |", "|---|---|---|---|---|---|"]
        se = lambda m, s: fmt(m) + (f" +- {s:.2f}" if seeds > 1 else "")
        md += [f"| {r['n']} | {r['kl']:.2f} | {math.sqrt(r['kl']):.2f} | {se(r['reward'], r['reward_se'])} | "
               f"{se(r['gold'], r['gold_se'])} | {fmt(r['parse'])} |" for r in bon]
        md.append("")
    if sw["ppo"] or sw["beta0"]:
        md += ["**PPO** (adaptive KL toward the target, `--kl_horizon=640`, and one run without a KL penalty; "
               "held-out eval, 200 samples; the peak is the best eval on the run's trajectory)", "",
               "| run | iterations | final KL | final proxy | final gold | final parse | peak gold (at KL) | final beta |",
               "|---|---|---|---|---|---|---|---|"]
        for label, rows in [(f"target KL {t:g}", r) for t, r in sw["ppo"]] + \
                           ([("beta = 0", sw["beta0"])] if sw["beta0"] else []):
            f, pts = final(rows), eval_points(rows)
            if not f:
                continue
            pk = max(pts, key=lambda r: r["gold"])
            betas = [r["beta"] for r in rows if r.get("split") == "train" and numeric(r.get("beta"))]
            md.append(f"| {label} | {f['iter']} | {f['kl']:.2f} | {fmt(f.get('reward'))} | {f['gold']:.2f} | "
                      f"{fmt(f.get('parse'))} | {pk['gold']:.2f} ({pk['kl']:.2f}) | {fmt(betas[-1] if betas else None, 3)} |")
        md.append("")
    if sw["beta0"]:
        pts = eval_points(sw["beta0"])
        md += ["**PPO with beta = 0**, held-out eval over iterations", "",
               "| iteration | " + " | ".join(str(r["iter"]) for r in pts) + " |",
               "|---" * (len(pts) + 1) + "|",
               "| proxy (RM) | " + " | ".join(fmt(r.get("reward")) for r in pts) + " |",
               "| gold | " + " | ".join(fmt(r["gold"]) for r in pts) + " |",
               "| KL | " + " | ".join(fmt(r["kl"], 1) for r in pts) + " |",
               "| parse | " + " | ".join(fmt(r.get("parse")) for r in pts) + " |", ""]
    for key, what, col, extra in (
            ("dpo", "DPO** (`--beta`, on the reward model's training pairs; val accuracy: implicit reward "
                    "on 600 held-out pairs)", "beta", "val accuracy"),
            ("grpo", "GRPO** (`--reward_fns=rm`, `--kl_coef`; proxy: the RM reward of the last logged train "
                     "rollouts, train prompts)", "kl_coef", "proxy (train)")):
        if not sw[key]:
            continue
        md += [f"**{what}", "", f"| {col} | steps | final KL | final gold | final parse | peak gold (at KL) | {extra} |",
               "|---|---|---|---|---|---|---|"]
        for p, rows in sw[key]:
            f = final(rows)
            if not f:
                continue
            train = [r for r in rows if "lr" in r and numeric(r.get("reward"))]
            last = fmt(f.get("val_rewards/accuracies"), 3) if key == "dpo" else fmt(train[-1]["reward"] if train else None)
            pk = max(eval_points(rows), key=lambda r: r["gold"])
            md.append(f"| {p:g} | {f['iter']} | {f['kl']:.2f} | {f['gold']:.2f} | {fmt(f.get('parse'))} | "
                      f"{pk['gold']:.2f} ({pk['kl']:.2f}) | {last} |")
        md.append("")
    sft = [r for r in (sw["sft"] or []) if numeric(r.get("gold"))]
    if sft:
        md += [f"SFT model (its last eval): gold {sft[-1]['gold']:.2f}, parse {fmt(sft[-1].get('parse'))}.", ""]
    if sw["times"]:
        t = sw["times"]
        md += ["**Wall time** (seconds, as frontier.sh measured them)", "",
               "| " + " | ".join(t) + " |", "|---" * len(t) + "|", "| " + " | ".join(str(v) for v in t.values()) + " |", ""]
    return "\n".join(md)


def plot_frontier(plt, sw, out_dir):
    sk = lambda kl: math.sqrt(max(kl, 0.0))
    bon = bon_table(sw["bon"])
    sft = [r for r in (sw["sft"] or []) if numeric(r.get("gold"))]
    written = []

    # (a) gold against KL, every method
    fig, ax = plt.subplots(figsize=(8, 5), dpi=DPI, layout="constrained")
    if bon:
        ax.errorbar([r["kl"] for r in bon], [r["gold"] for r in bon], yerr=[r["gold_se"] for r in bon],
                    fmt="o-", c="C0", ms=4, capsize=2, label="best-of-N (N = 1..%d)" % bon[-1]["n"])
        for r in bon:
            if r["n"] in (4, 16, 64, 256):
                ax.annotate(f"N={r['n']}", (r["kl"], r["gold"]), textcoords="offset points", xytext=(3, -11),
                            fontsize=7, c="C0")
    for i, (t, rows) in enumerate(sw["ppo"]):
        pts = eval_points(rows)
        ax.plot([r["kl"] for r in pts], [r["gold"] for r in pts], "-", c="C1", alpha=0.35, lw=1)
        ax.plot(pts[-1]["kl"], pts[-1]["gold"], "s", c="C1", ms=6, label="PPO, target KL (end of run)" if i == 0 else None)
        ax.annotate(f"{t:g}", (pts[-1]["kl"], pts[-1]["gold"]), textcoords="offset points", xytext=(4, 3), fontsize=7, c="C1")
    if sw["beta0"]:
        pts = eval_points(sw["beta0"])
        ax.plot([r["kl"] for r in pts], [r["gold"] for r in pts], "v--", c="C3", ms=4, lw=1,
                label="PPO, beta = 0 (every eval)")
    for key, c, m, label in (("dpo", "C2", "D", "DPO, beta (end of run)"), ("grpo", "C4", "^", "GRPO (RM reward), kl_coef (end of run)")):
        ends = [(p, final(rows)) for p, rows in sw[key] if final(rows)]
        for _, rows in sw[key]:  # each run's eval trajectory, faint; its end is the marker
            pts = eval_points(rows)
            ax.plot([r["kl"] for r in pts], [r["gold"] for r in pts], "-", c=c, alpha=0.3, lw=1)
        if ends:
            ax.plot([f["kl"] for _, f in ends], [f["gold"] for _, f in ends], m + ":", c=c, ms=6, label=label)
            for p, f in ends:
                ax.annotate(f"{p:g}", (f["kl"], f["gold"]), textcoords="offset points", xytext=(4, 3), fontsize=7, c=c)
    if sft:
        ax.plot(0, sft[-1]["gold"], "k*", ms=10, label="SFT")
    ax.axhline(1.0, c="gray", ls=":", lw=1)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("KL(policy || SFT) in nats (linear below 1, log above)")
    ax.set_ylabel("gold score, held-out prompts (max 1.0)")
    ax.set_title("(a) gold score against KL: every method, one SFT model, one reward model", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    written.append(os.path.join(out_dir, "frontier_gold_vs_kl.png"))
    fig.savefig(written[-1], dpi=DPI)
    plt.close(fig)

    # (b) Gao et al. 2022 Fig. 1: proxy (dashed) and gold (solid) against sqrt(KL)
    fig, (ax_b, ax_p) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=DPI, layout="constrained")
    if bon:
        x = [sk(r["kl"]) for r in bon]
        ax_b.plot(x, [r["reward"] for r in bon], "o--", c="C0", ms=4, label="proxy (reward model)")
        ax_b.errorbar(x, [r["gold"] for r in bon], yerr=[r["gold_se"] for r in bon], fmt="o-", c="C0", ms=4,
                      capsize=2, label="gold")
        for r in bon:
            if r["n"] in (2, 8, 32, 128, 256):
                ax_b.annotate(f"N={r['n']}", (sk(r["kl"]), r["reward"]), textcoords="offset points",
                              xytext=(-8, 6), fontsize=7)
    ax_b.set_title("(b) best-of-N", fontsize=10)
    ppo_runs = [(f"target {t:g}", rows) for t, rows in sw["ppo"]] + ([("beta = 0", sw["beta0"])] if sw["beta0"] else [])
    for i, (label, rows) in enumerate(ppo_runs):
        pts = [r for r in eval_points(rows) if numeric(r.get("reward"))]
        c = "C3" if label == "beta = 0" else f"C{(i + 1) % 10 if (i + 1) % 10 != 3 else 9}"
        x = [sk(r["kl"]) for r in pts]
        ax_p.plot(x, [r["reward"] for r in pts], "--", c=c, lw=1.2, marker=".", ms=4)
        ax_p.plot(x, [r["gold"] for r in pts], "-", c=c, lw=1.5, marker="o", ms=3, label=label)
    ax_p.plot([], [], "k--", label="proxy (dashed)")
    ax_p.plot([], [], "k-", label="gold (solid)")
    ax_p.set_title("(b) PPO: every run's held-out evals", fontsize=10)
    for ax in (ax_b, ax_p):
        ax.set_xlabel("sqrt(KL to SFT), sqrt(nats)")
        ax.axhline(0, c="gray", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_b.set_ylabel("score (RM normalised on SFT samples; gold max 1.0)")
    written.append(os.path.join(out_dir, "frontier_gao.png"))
    fig.savefig(written[-1], dpi=DPI)
    plt.close(fig)

    # (c) the beta = 0 run over iterations
    if sw["beta0"]:
        rows = sw["beta0"]
        train = [r for r in rows if r.get("split") == "train"]
        test = eval_points(rows)
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5.5), dpi=DPI, layout="constrained", sharex=True,
                                       height_ratios=(3, 2))
        ax1.plot([r["iter"] for r in train], [r["reward"] for r in train], c="C0", alpha=0.3, lw=0.8)
        ax1.plot([r["iter"] for r in train], [r["gold"] for r in train], c="C3", alpha=0.3, lw=0.8)
        ax1.plot([r["iter"] for r in test], [r["reward"] for r in test], "o--", c="C0", ms=4,
                 label="proxy: reward model (held out; faint: train rollouts)")
        ax1.plot([r["iter"] for r in test], [r["gold"] for r in test], "o-", c="C3", ms=4, label="gold (held out)")
        ax1.axhline(0, c="gray", lw=0.8)
        ax1.set_ylabel("score")
        ax1.set_title("(c) PPO without a KL penalty (beta = 0): the reward model is hacked", fontsize=10)
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.plot([r["iter"] for r in test], [r["kl"] for r in test], "o-", c="k", ms=3, label="KL to SFT (nats)")
        ax2.set_ylabel("KL (nats)")
        ax2.grid(alpha=0.3)
        ax3 = ax2.twinx()
        ax3.plot([r["iter"] for r in test], [r.get("parse", float("nan")) for r in test], "s:", c="C2", ms=3,
                 label="parse rate")
        ax3.set_ylim(-0.05, 1.05)
        ax3.set_ylabel("parse rate", color="C2")
        ax2.set_xlabel("PPO iteration")
        h1, l1 = ax2.get_legend_handles_labels()
        h2, l2 = ax3.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, fontsize=8, loc="center left")
        written.append(os.path.join(out_dir, "frontier_beta0.png"))
        fig.savefig(written[-1], dpi=DPI)
        plt.close(fig)
    return written


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description="Draw PNGs from metrics.jsonl files (see the docstring).")
    ap.add_argument("files", nargs="*", help="metrics.jsonl files (or the run folders holding them)")
    ap.add_argument("--out_dir", default="out/plots", help="where the PNGs go (default out/plots)")
    ap.add_argument("--frontier", default="", help="a frontier.sh output folder: draw its three figures and tables")
    args = ap.parse_args(argv)
    if not args.files and not args.frontier:
        fail("nothing to plot: give metrics.jsonl files (python plot.py out/ppo/metrics.jsonl) or --frontier=out/frontier")
    written = []
    if args.frontier:
        sw = load_sweep(args.frontier)
        md = tables(sw)
        os.makedirs(args.out_dir, exist_ok=True)
        with open(os.path.join(args.out_dir, "frontier.md"), "w", encoding="utf-8") as f:
            f.write(md + "\n")
        print(md)
        written += plot_frontier(need_matplotlib(), sw, args.out_dir)
    if args.files:
        runs = {}
        for p in args.files:
            runs[run_name(p, runs)] = read_metrics(p)  # every file read (and checked) before drawing any
        plt = need_matplotlib()
        os.makedirs(args.out_dir, exist_ok=True)
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
