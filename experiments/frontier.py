"""
experiments/frontier.py: the figures and tables of experiments/frontier.sh's sweep. Reads the runs it
writes (bon_s*, ppo_kl*, ppo_beta0, dpo_beta*, grpo_kl*, sft, times.tsv; plot.py reads each metrics.jsonl)
and draws

  (a) frontier_gold_vs_kl.png: held-out gold score against KL to the SFT model for every method
      (Stiennon et al. 2020 Fig. 2, Rafailov et al. 2023 Fig. 2);
  (b) frontier_gao.png: RM (proxy) and gold score against sqrt(KL) for best-of-N and PPO (Gao et al.
      2022 Fig. 1);
  (c) frontier_beta0.png: the beta = 0 PPO run's proxy and gold over iterations, with its KL and parse rate.

The numbers behind them go to frontier.md (markdown tables) and stdout; best-of-N's seeds are averaged
(mean +- standard error, experiments/table.py). Needs matplotlib for the figures.

    python -m experiments.frontier --root=out/frontier --out_dir=figures
"""
import argparse
import glob
import math
import os
import re

from experiments.table import mean_se
from plot import DPI, eval_points, fail, need_matplotlib, numeric, read_metrics


def param(name, prefix):
    return float(name[len(prefix):])


def load_sweep(root):
    """frontier.sh's runs, by method. Each run: (hyperparameter, rows)."""
    if not os.path.isdir(root):
        fail(f"{root}: no such folder (run bash experiments/frontier.sh first, or give --root=its OUT folder)")
    runs = {}
    for d in sorted(glob.glob(os.path.join(root, "*", "metrics.jsonl"))):
        runs[os.path.basename(os.path.dirname(d))] = read_metrics(d)
    pick = lambda prefix: sorted(((param(k, prefix), v) for k, v in runs.items()
                                  if re.fullmatch(re.escape(prefix) + r"[0-9.]+", k)), key=lambda t: t[0])
    sweep = dict(bon=pick("bon_s"), ppo=pick("ppo_kl"), dpo=pick("dpo_beta"), grpo=pick("grpo_kl"),
                 beta0=runs.get("ppo_beta0"), sft=runs.get("sft"), reward=runs.get("reward"))
    if not sweep["bon"] and not sweep["ppo"] and not sweep["beta0"]:
        fail(f"{root}: no frontier runs in it (bon_s*/, ppo_kl*/, ppo_beta0/ with metrics.jsonl); "
             "run bash experiments/frontier.sh")
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
        out.append(dict(n=n, kl=rs[0]["kl"], reward=rew, reward_se=rew_se, gold=g, gold_se=g_se, seeds=len(rs),
                        **{k: sum(r.get(k, float("nan")) for r in rs) / len(rs) for k in ("parse",) + SIGNS}))
    return out


def final(rows):
    pts = eval_points(rows)
    return pts[-1] if pts else None


def fmt(v, nd=2):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


# the signs of reward hacking on the built-in task (task.report): praise beyond the notes, length in tokens,
# and how much the reviews depend on their own prompt's notes
SIGNS, SIGNS_HEAD = ("sycophancy", "response_len", "reads_prompt"), " sycophancy | length | reads_prompt |"


def sign(r, k):
    return fmt(r.get(k), 1 if k == "response_len" else 2)


def signs(r):
    return " " + " | ".join(sign(r, k) for k in SIGNS) + " |"


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
               "| N | KL | sqrt KL | proxy (RM) | gold | parse |" + SIGNS_HEAD, "|---" * 9 + "|"]
        se = lambda m, s: fmt(m) + (f" +- {s:.2f}" if seeds > 1 else "")
        md += [f"| {r['n']} | {r['kl']:.2f} | {math.sqrt(r['kl']):.2f} | {se(r['reward'], r['reward_se'])} | "
               f"{se(r['gold'], r['gold_se'])} | {fmt(r['parse'])} |" + signs(r) for r in bon]
        md.append("")
    if sw["ppo"] or sw["beta0"]:
        md += ["**PPO** (adaptive KL toward the target, `--kl_horizon=640`, and one run without a KL penalty; "
               "held-out eval, 200 samples; the peak is the best eval on the run's trajectory)", "",
               "| run | iterations | final KL | final proxy | final gold | final parse | peak gold (at KL) | final beta |"
               + SIGNS_HEAD, "|---" * 11 + "|"]
        for label, rows in [(f"target KL {t:g}", r) for t, r in sw["ppo"]] + \
                           ([("beta = 0", sw["beta0"])] if sw["beta0"] else []):
            f, pts = final(rows), eval_points(rows)
            if not f:
                continue
            pk = max(pts, key=lambda r: r["gold"])
            betas = [r["beta"] for r in rows if r.get("split") == "train" and numeric(r.get("beta"))]
            md.append(f"| {label} | {f['iter']} | {f['kl']:.2f} | {fmt(f.get('reward'))} | {f['gold']:.2f} | "
                      f"{fmt(f.get('parse'))} | {pk['gold']:.2f} ({pk['kl']:.2f}) | {fmt(betas[-1] if betas else None, 3)} |"
                      + signs(f))
        md.append("")
    if sw["beta0"]:
        pts = eval_points(sw["beta0"])
        md += ["**PPO with beta = 0**, held-out eval over iterations", "",
               "| iteration | " + " | ".join(str(r["iter"]) for r in pts) + " |",
               "|---" * (len(pts) + 1) + "|",
               "| proxy (RM) | " + " | ".join(fmt(r.get("reward")) for r in pts) + " |",
               "| gold | " + " | ".join(fmt(r["gold"]) for r in pts) + " |",
               "| KL | " + " | ".join(fmt(r["kl"], 1) for r in pts) + " |",
               "| parse | " + " | ".join(fmt(r.get("parse")) for r in pts) + " |"]
        md += [f"| {k if k != 'response_len' else 'length'} | " + " | ".join(sign(r, k) for r in pts) + " |"
               for k in SIGNS] + [""]
    for key, what, col, extra in (
            ("dpo", "DPO** (`--beta`, on the reward model's training pairs; val accuracy: implicit reward "
                    "on 600 held-out pairs)", "beta", "val accuracy"),
            ("grpo", "GRPO** (`--reward_fns=rm`, `--kl_coef`; proxy: the RM reward of the last logged train "
                     "rollouts, train prompts)", "kl_coef", "proxy (train)")):
        if not sw[key]:
            continue
        md += [f"**{what}", "", f"| {col} | steps | final KL | final gold | final parse | peak gold (at KL) | {extra} |"
               + SIGNS_HEAD, "|---" * 10 + "|"]
        for p, rows in sw[key]:
            f = final(rows)
            if not f:
                continue
            train = [r for r in rows if "lr" in r and numeric(r.get("reward"))]
            last = fmt(f.get("val_rewards/accuracies"), 3) if key == "dpo" else fmt(train[-1]["reward"] if train else None)
            pk = max(eval_points(rows), key=lambda r: r["gold"])
            md.append(f"| {p:g} | {f['iter']} | {f['kl']:.2f} | {f['gold']:.2f} | {fmt(f.get('parse'))} | "
                      f"{pk['gold']:.2f} ({pk['kl']:.2f}) | {last} |" + signs(f))
        md.append("")
    sft = [r for r in (sw["sft"] or []) if numeric(r.get("gold"))]
    if sft:
        md += [f"SFT model (its last eval): gold {sft[-1]['gold']:.2f}, parse {fmt(sft[-1].get('parse'))}.", ""]
    if sw["times"]:
        t = sw["times"]
        md += ["**Wall time** (seconds, as experiments/frontier.sh measured them)", "",
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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m experiments.frontier",
                                 description="The frontier sweep's figures and tables (see the docstring).")
    ap.add_argument("--root", default="out/frontier", help="frontier.sh's output folder (default out/frontier)")
    ap.add_argument("--out_dir", default="figures", help="where the PNGs and frontier.md go (default figures)")
    args = ap.parse_args(argv)
    sw = load_sweep(args.root)
    md = tables(sw)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "frontier.md"), "w", encoding="utf-8") as f:
        f.write(md + "\n")
    print(md)
    for p in plot_frontier(need_matplotlib(), sw, args.out_dir):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
