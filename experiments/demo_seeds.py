"""
experiments/demo_seeds.py: the tables of experiments/demo_seeds.sh (the demo over seeds): each method's
held-out gold and KL per seed with the mean +- standard error, the differences between methods (paired by
seed: every method of a seed starts from the same SFT model, feedback and reward model), and time to gold.

    python -m experiments.demo_seeds --root=out/demo_seeds [--figure=figures/time_to_gold.png]

Time to gold: a method's seconds are its own stage's, from its start to each held-out evaluation, plus
the stages it needs upstream (PPO and best-of-N: SFT, feedback, reward model; DPO: SFT, feedback; GRPO on
gold: SFT only, a verifiable reward; GRPO on the reward model: as PPO). Labels: the preference pairs the method consumed (feedback.py's
pairwise_train.jsonl, each the majority of n_annotators simulated people); GRPO on gold consumes none.
"""
import argparse
import glob
import json
import os
import sys

from configurator import UserError
from experiments.table import cell, evals, markdown, mean_se, read_rows

METHODS = ("ppo", "dpo", "grpo", "sample", "grpo_rm")  # sample: best-of-16 with the reward model
NAMES = {"ppo": "PPO", "dpo": "DPO", "grpo": "GRPO (gold reward)", "sample": "best-of-16", "grpo_rm": "GRPO (RM reward)"}
UPSTREAM = {"ppo": ("sft", "feedback", "reward"), "dpo": ("sft", "feedback"), "grpo": ("sft",),
            "sample": ("sft", "feedback", "reward"), "grpo_rm": ("sft", "feedback", "reward")}


def read_seed(d):
    """One seed's numbers: {'times': {stage: (start, end)}, 'labels': n, stage: [eval rows]}."""
    with open(os.path.join(d, "times.tsv")) as f:
        times = {s: (float(a), float(b)) for s, a, b in (line.split("\t") for line in f.read().splitlines()[1:])}
    with open(os.path.join(d, "feedback", "pairwise_train.jsonl")) as f:
        labels = sum(1 for line in f if line.strip())
    out = {"times": times, "labels": labels, "reward": [r for r in read_rows(os.path.join(d, "reward")) if "acc_gold" in r]}
    for stage in ("sft",) + METHODS:
        out[stage] = evals(os.path.join(d, stage))
    return out


def final(seed, m):
    """A method's final eval row (best-of-N: the largest N)."""
    return seed[m][-1]


def paired(xs, ys):
    """Mean and standard error of the per-seed differences xs - ys."""
    return mean_se([x - y for x, y in zip(xs, ys)])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m experiments.demo_seeds", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="out/demo_seeds", help="demo_seeds.sh's output folder")
    ap.add_argument("--figure", default="", help="also draw gold against seconds here (needs matplotlib)")
    args = ap.parse_args(argv)
    dirs = sorted((d for d in glob.glob(os.path.join(args.root, "s*")) if os.path.exists(os.path.join(d, "done"))),
                  key=lambda d: (len(d), d))  # s2 before s1337
    if not dirs:
        print(f"error: no finished seed in {args.root} (run bash experiments/demo_seeds.sh)", file=sys.stderr)
        sys.exit(2)
    try:
        seeds = {os.path.basename(d)[1:]: read_seed(d) for d in dirs}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    # 1. per seed, then mean +- SE: gold / KL of every method
    head = ["seed", "SFT gold", "RM acc_gold", "probe length / positivity"] + [NAMES[m] + " gold / KL" for m in METHODS]
    rows, col = [], {m: [] for m in METHODS}
    for name, s in seeds.items():
        rm = s["reward"][-1]
        rows.append([name, f"{s['sft'][-1]['gold']:.2f}", f"{rm['acc_gold']:.3f}",
                     f"{rm.get('probe/length', float('nan')):.2f} / {rm.get('probe/positivity', float('nan')):.2f}"]
                    + [f"{final(s, m)['gold']:.2f} / {final(s, m)['kl']:.2f}" for m in METHODS])
        for m in METHODS:
            col[m].append(final(s, m)["gold"])
    S = list(seeds.values())
    rows.append([f"mean ± SE ({len(S)})", cell([s["sft"][-1]["gold"] for s in S]),
                 cell([s["reward"][-1]["acc_gold"] for s in S], ".3f"),
                 cell([s["reward"][-1].get("probe/length") for s in S]) + " / "
                 + cell([s["reward"][-1].get("probe/positivity") for s in S])]
                + [cell(col[m]) + " / " + cell([final(s, m)["kl"] for s in S]) for m in METHODS])
    print(markdown(head, rows) + "\n")

    # 2. do the methods separate? the difference of final gold, paired by seed, and unpaired
    pairs = [(a, b) for i, a in enumerate(METHODS) for b in METHODS[i + 1:]]
    rows = []
    for a, b in pairs:
        m, se = paired(col[a], col[b])
        (ma, sa), (mb, sb) = mean_se(col[a]), mean_se(col[b])
        se_u = (sa ** 2 + sb ** 2) ** 0.5
        rows.append([f"{NAMES[a]} - {NAMES[b]}", f"{m:+.3f} ± {se:.3f}", f"{abs(m) / se:.1f}" if se else "-",
                     f"{se_u:.3f}", "yes" if se_u and abs(ma - mb) > 2 * se_u else "no"])
    print(markdown(["difference of final gold", "paired by seed (mean ± SE)", "|mean| / SE",
                    "unpaired SE", "apart by > 2 unpaired SE"], rows) + "\n")

    # 3. time to gold: gold against the method's own seconds (with its upstream stages) and labels
    rows, curves = [], {}
    for m in METHODS:
        n_eval = min(len(s[m]) for s in S)
        pts = range(n_eval) if m != "sample" else (0, n_eval - 1)  # best-of-N: N = 1 and N = 16
        for i in pts:
            secs = [sum(s["times"][u][1] - s["times"][u][0] for u in UPSTREAM[m])
                    + (s["times"][m][1] if m == "sample" else s[m][i]["time"]) - s["times"][m][0] for s in S]
            golds = [s[m][i]["gold"] for s in S]
            step = f"N = {S[0][m][i]['n']}" if m == "sample" else f"iter {S[0][m][i].get('iter', i)}"
            labels = 0 if m == "grpo" else round(sum(s["labels"] for s in S) / len(S))
            rows.append([NAMES[m], step, f"{sum(secs) / len(secs):.0f}", labels if labels else "0 (verifiable reward)",
                         cell(golds), cell([s[m][i]["kl"] for s in S])])
            curves.setdefault(m, []).append((sum(secs) / len(secs), *mean_se(golds)))
    print(markdown(["method", "at", "seconds (own stage + upstream)", "labels (pairs)", "gold", "KL"], rows))
    total = [sum(b - a for a, b in s["times"].values()) for s in S]
    print(f"\nwhole pipeline per seed: {cell(total, '.0f')} s")

    if args.figure:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no figure (pip install matplotlib)", file=sys.stderr)
            return
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for m, pts in curves.items():
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=NAMES[m])
        ax.set_xlabel("seconds on 2 CPU cores (the method's stage and the stages it needs)")
        ax.set_ylabel("held-out gold (mean ± SE over seeds)")
        ax.legend()
        ax.grid(alpha=0.3)
        os.makedirs(os.path.dirname(args.figure) or ".", exist_ok=True)
        fig.savefig(args.figure, dpi=120, bbox_inches="tight")
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
