"""
experiments/overopt.py (goldRLHF): reward over-optimisation measured (Gao et al. 2022, "Scaling Laws for
Reward Model Overoptimization"), for one reward model and for an ensemble's objectives.

Reads the finished runs of experiments/ensembles.sh (root/s<seed>/{bon,ppo_beta0,ppo_default}_<objective>/
metrics.jsonl and the reward models' rm_single/, rm_ens4/; a run is finished when its folder has the
script's `done` file) and prints, for every objective (single: one reward model;
mean, worst, uncertainty: the ensemble read as its mean, its minimum, mean - 1 * std):
  - the reward models: accuracy against gold, Spearman with gold, how much the members differ
  - best-of-N for N = 1..256 (KL = log N - (N-1)/N) and PPO along its run: the proxy (the reward the
    policy was optimised for), the gold score, the members' spread (ensemble_std)
  - Gao et al.'s functional forms fitted to gold minus the start's gold, against d = sqrt(KL):
        best-of-N   R(d) = d (alpha - beta d)           peak at d* = alpha / (2 beta)
        RL          R(d) = d (alpha - beta log d)       peak at d* = exp(alpha / beta - 1)
    by least squares (both are linear in alpha, beta), with R^2 and the peak
Seeds are pooled for the fits and averaged (mean +- standard error) in the tables.

    python -m experiments.overopt --root=out/ensembles              # tables (and figures/ensembles_gao.png)
    python -m experiments.overopt --root=out/ensembles --figure=''  # tables only

Departure from Gao et al.: they fit against a gold *reward model* and many policy sizes; here gold is the
task's hidden scorer and the policy is one tiny model, so the coefficients describe this task only.
"""
import glob
import math
import os

import numpy as np

from configurator import UserError, configure
from experiments.table import cell, markdown, read_rows

root = "out/ensembles"  # experiments/ensembles.sh's output folder
figure = "figures/ensembles_gao.png"  # where the figure goes ('' none; needs matplotlib)
OBJECTIVES = ("single", "mean", "worst", "uncertainty")


# ----------------------------------------------------------------------------- the fits
def gao_features(d, form):
    """Gao et al. 2022's forms as a linear model y = X @ (alpha, beta): d (N,) = sqrt(KL) >= 0.
    'bon': X = [d, -d^2]; 'rl': X = [d, -d log d] (d log d -> 0 at d = 0)."""
    d = np.asarray(d, dtype=float)
    dlogd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    return np.stack([d, -d * d if form == "bon" else -dlogd], 1)


def fit_gao(d, y, form):
    """Least-squares alpha, beta of y ~ R(d) (gao_features), R^2 = 1 - SS_res / SS_tot, and the peak d*
    (inf when beta <= 0: no turn). d, y: (N,) sequences; y is gold minus the start's gold."""
    X, y = gao_features(d, form), np.asarray(y, dtype=float)
    (alpha, beta), *_ = np.linalg.lstsq(X, y, rcond=None)
    ss_res, ss_tot = ((y - X @ np.array([alpha, beta])) ** 2).sum(), ((y - y.mean()) ** 2).sum()
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    if beta <= 0:
        peak = float("inf")
    else:
        peak = alpha / (2 * beta) if form == "bon" else math.exp(min(alpha / beta - 1, 50))
    return float(alpha), float(beta), float(r2), float(peak)


def gao_curve(d, alpha, beta, form):
    return gao_features(d, form) @ np.array([alpha, beta])


# ----------------------------------------------------------------------------- reading the runs
def curve(run_dir, kind):
    """[(kl, proxy, gold, ensemble_std or None, parse, row)] of a run: best-of-N lines (one per N) or PPO's
    eval lines (split test), in order; row is the whole line (the hacking's signs: HACK_KEYS)."""
    if not os.path.exists(os.path.join(run_dir, "done")):  # (ensembles.sh marks a finished run; skip the rest)
        return []
    rows = read_rows(run_dir)
    rows = [r for r in rows if "n" in r] if kind == "bon" else [r for r in rows if r.get("split") == "test"]
    return [(r["kl"], r["reward"], r["gold"], r.get("ensemble_std"), r.get("parse"), r) for r in rows]


# how a review goes wrong when a biased reward model is over-optimised (task v2): praise beyond the notes,
# length, things the notes did not hold, polarity against the notes (README, "The built-in task")
HACK_KEYS = (("sycophancy", "sycophancy"), ("response_len", "length"), ("gold/hallucination", "hallucination"),
             ("gold/faithfulness", "faithfulness"))


def table(head, rows):
    print(markdown(head, rows) + "\n")


# ----------------------------------------------------------------------------- main
def main(argv=None):
    configure(globals(), argv)
    seeds = sorted(glob.glob(os.path.join(root, "s*")))
    if not seeds:
        raise UserError(f"{root}: no s<seed>/ folders here", fix="run bash experiments/ensembles.sh first")
    print(f"{root}: seeds {', '.join(os.path.basename(s) for s in seeds)}\n")

    # the reward models
    rm_rows = []
    for name in ("rm_single", "rm_ens4"):
        finals = [[r for r in read_rows(os.path.join(s, name)) if "spearman" in r] for s in seeds
                  if os.path.exists(os.path.join(s, name, "done"))]
        finals = [f[-1] for f in finals if f]
        rm_rows.append([name, len(finals)] + [cell([f.get(k) for f in finals]) for k in
                       ("acc_gold", "spearman", "member_corr", "ensemble_std")]
                       + [cell([min(f["member_acc_gold"]) for f in finals if "member_acc_gold" in f]) + " - " +
                          cell([max(f["member_acc_gold"]) for f in finals if "member_acc_gold" in f])])
    print("Reward models (held-out pairs; Spearman with gold on fresh SFT samples; members' correlation and std on them):")
    table(["model", "seeds", "acc_gold", "Spearman", "member corr", "ensemble std", "members' acc_gold"], rm_rows)

    curves, fits = {}, []
    for kind, label, form in (("bon", "best-of-N", "bon"), ("ppo_beta0", "PPO beta = 0", "rl"),
                              ("ppo_default", "PPO default (adaptive beta, target KL 2)", "rl")):
        head, body = ["objective", "runs"], []
        for obj in OBJECTIVES:
            runs = [c for c in (curve(os.path.join(s, f"{kind}_{obj}"), "bon" if kind == "bon" else "rl") for s in seeds) if c]
            if not runs:
                continue
            curves[kind, obj] = runs
            d = [math.sqrt(max(k, 0.0)) for c in runs for k, *_ in c]
            y = [g - c[0][2] for c in runs for _, _, g, *_ in c]  # gold minus the start's (N = 1, iteration 0)
            alpha, beta, r2, peak = fit_gao(d, y, form)
            fits.append((label, obj, alpha, beta, r2, peak))
            peak_i = [max(range(len(c)), key=lambda i: c[i][2]) for c in runs]
            body.append([obj, len(runs),
                         cell([c[i][2] for c, i in zip(runs, peak_i)]), cell([c[i][0] for c, i in zip(runs, peak_i)]),
                         cell([c[-1][2] for c in runs]), cell([c[-1][1] for c in runs]), cell([c[-1][0] for c in runs]),
                         cell([c[-1][4] for c in runs]), cell([c[0][3] for c in runs]) + " -> " + cell([c[-1][3] for c in runs])]
                        + [cell([c[0][5].get(k) for c in runs]) + " -> " + cell([c[-1][5].get(k) for c in runs])
                           for k, _ in HACK_KEYS])
        if body:
            print(f"{label}: gold at its peak and at the end (proxy: the reward optimised; KL in nats)")
            table(head + ["peak gold", "at KL", "final gold", "final proxy", "final KL", "final parse", "ensemble std start -> end"]
                  + [f"{name} start -> end" for _, name in HACK_KEYS], body)
    print("Gao et al. 2022's forms fitted to gold - gold at the start, d = sqrt(KL) (seeds pooled):")
    table(["method", "objective", "alpha", "beta", "R^2", "peak d*", "peak KL"],
          [[m, o, f"{a:.3f}", f"{b:.3f}", f"{r:.3f}", f"{p:.2f}", f"{p * p:.1f}"] for m, o, a, b, r, p in fits])
    if figure and curves:
        draw(curves, fits)


def draw(curves, fits):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no figure (pip install matplotlib)")
        return
    fit_of = {(m, o): (a, b) for m, o, a, b, *_ in fits}
    kinds = [("bon", "best-of-N", "bon"), ("ppo_beta0", "PPO beta = 0", "rl"), ("ppo_default", "PPO default (adaptive beta, target KL 2)", "rl")]
    kinds = [k for k in kinds if any(key[0] == k[0] for key in curves)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4.2), squeeze=False)
    colors = dict(single="tab:gray", mean="tab:blue", worst="tab:red", uncertainty="tab:green")
    for ax, (kind, label, form) in zip(axes[0], kinds):
        for obj in OBJECTIVES:
            runs = curves.get((kind, obj))
            if not runs:
                continue
            for i, c in enumerate(runs):
                d = [math.sqrt(max(k, 0)) for k, *_ in c]
                ax.plot(d, [g for _, _, g, *_ in c], "-o", ms=2.5, color=colors[obj], alpha=0.9 if i == 0 else 0.35,
                        label=f"{obj}: gold" if i == 0 else None)
                ax.plot(d, [p for _, p, *_ in c], "--", color=colors[obj], alpha=0.6 if i == 0 else 0.25,
                        label=f"{obj}: proxy" if i == 0 else None)
            a, b = fit_of[label, obj]
            dd = np.linspace(0, max(math.sqrt(max(k, 0)) for c in runs for k, *_ in c), 100)
            ax.plot(dd, runs[0][0][2] + gao_curve(dd, a, b, form), ":", color=colors[obj], lw=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("sqrt(KL to SFT)  (nats^0.5)")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Gold (solid) and proxy (dashed) against sqrt KL; dotted: Gao et al.'s fit to gold", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(figure) or ".", exist_ok=True)
    fig.savefig(figure, dpi=120)
    print(f"figure: {figure}")


if __name__ == "__main__":
    main()
