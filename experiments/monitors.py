"""
experiments/monitors.py: the reward-hacking monitors (monitors.py) against gold, from experiments/monitors.sh's
runs. Early stopping is simulated offline from each run's metrics.jsonl (one log per rollout batch).

The ground truth: gold and the reward model's score (the proxy) of each batch's samples, as a moving average
over SMOOTH logs (one PPO batch is 64 samples, about +-0.06 gold), labelled by monitors.hacking_onset (issue
35's rule: gold more than 0.1 below its running best for 2 logs while the proxy is above its value there).
A monitor's alarm is the first log whose value crosses its threshold (the value as logged: what --stop_on
sees); the policy kept is the one before that batch's (gold: the smoothed gold of the log before). "kl" is the
baseline: a fixed KL budget.

    python -m experiments.monitors --root=out/monitors --choose --seeds=1,2        # thresholds -> THRESHOLDS
    python -m experiments.monitors --root=out/monitors --seeds=3,4,5 [--figure=figures/monitors.png]
    python -m experiments.monitors --root=out/monitors --seeds=3,4,5 --runs=grpo_rm,grpo_rm_kl01,grpo_gold

Each monitor is reported over the runs that logged it: judge_agree (grpo.py --monitor_judge) over the GRPO runs
only; --runs restricts every row to the same runs, to compare it like for like.

--choose picks, per monitor, the direction (alarm above or below) and the threshold that keep the most gold
on the given seeds' runs (mean over runs of the gold kept; ties: the one that alarms least), from the values
the monitor took there. SIGNALS gives the direction the literature expects; the data may choose the other.
"""
import argparse
import json
import os

from experiments.table import markdown, mean_se
from monitors import hacking_onset

SMOOTH = 3
THRESHOLDS = os.path.join(os.path.dirname(__file__), "monitor_thresholds.json")
RUNS = ("ppo_beta0", "ppo_beta002", "grpo_rm", "ppo_default", "grpo_rm_kl01", "grpo_gold")
# each monitor's direction: '>' rises toward hacking, '<' falls
SIGNALS = {"monitor/ensemble_std": ">", "monitor/audit_gap": ">", "monitor/ood_frac": ">", "monitor/kl_rate": ">",
           "monitor/entropy_ratio": "<", "monitor/len_ratio": ">", "monitor/judge_agree": "<", "kl": ">"}


def moving_average(xs, n=SMOOTH):
    """Trailing mean over up to n values (the first values: over what there is)."""
    return [sum(xs[max(0, i - n + 1):i + 1]) / len(xs[max(0, i - n + 1):i + 1]) for i in range(len(xs))]


def read_run(path):
    """A run's batch logs -> dict of lists: gold, proxy, kl and every logged monitor (None where absent)."""
    rows = []
    with open(os.path.join(path, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("split") == "train" or "reward_std" in r:  # ppo.py's / grpo.py's batch lines
                rows.append(r)
    gold = [r["gold"] if "gold" in r else r.get("train_gold", r.get("reward/gold")) for r in rows]
    proxy = [r["reward"] if r.get("split") == "train" else r["reward/rm"] for r in rows]
    out = {"gold": gold, "proxy": proxy, "iter": [r["iter"] for r in rows]}
    for k in SIGNALS:
        out[k] = [r.get(k) for r in rows]
    out["cost"] = {k[5:-3]: [r[k] for r in rows if k in r] for k in {k for r in rows for k in r if k.startswith("cost/")}}
    return out


def label(run):
    """Adds the smoothed gold / proxy and the onset (a log index, or None) to a read_run dict."""
    run["gold_ma"], run["proxy_ma"] = moving_average(run["gold"]), moving_average(run["proxy"])
    run["onset"] = hacking_onset(run["gold_ma"], run["proxy_ma"])
    return run


def first_alarm(values, op, threshold):
    for t, v in enumerate(values):
        if v is not None and (v > threshold if op == ">" else v < threshold):
            return t
    return None


def gold_kept(run, alarm):
    """The smoothed gold of the policy an alarm at log `alarm` keeps (the log before; none: the run's end)."""
    g = run["gold_ma"]
    return g[-1] if alarm is None else g[max(alarm - 1, 0)]


def choose(runs, key):
    """(op, threshold) of `key` that keep the most gold over `runs` (ties: the fewest alarms, then the expected
    direction SIGNALS[key]); None if the monitor was never logged."""
    values = sorted({v for r in runs for v in r[key] if v is not None})
    if not values:
        return None
    best = None
    for op in sorted(("<", ">"), key=lambda o: o != SIGNALS.get(key, ">")):
        for thr in values + [values[-1] + 1.0 if op == ">" else values[0] - 1.0]:  # (the last: never alarm)
            alarms = [first_alarm(r[key], op, thr) for r in runs]
            kept = sum(gold_kept(r, a) for r, a in zip(runs, alarms)) / len(runs)
            n = sum(a is not None for a in alarms)
            if best is None or (round(kept, 9), -n) > (round(best[2], 9), -best[3]):
                best = (op, thr, kept, n)
    return best[0], best[1]


def report(runs, thresholds):
    """One row per monitor: lead time and KL on the runs with an onset, false alarms on the others, gold kept."""
    f2 = lambda xs: "-" if not xs else "%.2f ± %.2f" % mean_se(xs)
    rows = []
    for key in SIGNALS:  # each over the runs that logged it (judge_agree: grpo.py's only)
        logged = [r for r in runs if any(v is not None for v in r[key])]
        if key not in thresholds or not logged:
            continue
        hacked = [r for r in logged if r["onset"] is not None]
        clean = [r for r in logged if r["onset"] is None]
        op, thr = thresholds[key]
        alarms = {id(r): first_alarm(r[key], op, thr) for r in runs}
        early = [r["onset"] - alarms[id(r)] for r in hacked if alarms[id(r)] is not None]
        warned = sum(alarms[id(r)] is not None and alarms[id(r)] <= r["onset"] for r in hacked)
        kl_lead = [r["kl"][r["onset"]] - r["kl"][alarms[id(r)]] for r in hacked if alarms[id(r)] is not None]
        false = sum(alarms[id(r)] is not None for r in clean)
        kept_h = [gold_kept(r, alarms[id(r)]) for r in hacked]
        kept_c = [gold_kept(r, alarms[id(r)]) for r in clean]
        cost = [c for r in runs for c in r["cost"].get(key.split("/")[-1], [])]
        rows.append([key.split("/")[-1], f"{op} {thr:.4g}", f"{warned} / {len(hacked)}", f2(early), f2(kl_lead),
                     f"{false} / {len(clean)}", f2(kept_h), f2(kept_c), f2(kept_h + kept_c),
                     "%.2f" % (sum(cost) / len(cost)) if cost else "-"])
    hacked = [r for r in runs if r["onset"] is not None]
    clean = [r for r in runs if r["onset"] is None]
    end_h, peak_h = [r["gold_ma"][-1] for r in hacked], [max(r["gold_ma"]) for r in hacked]
    end_c = [r["gold_ma"][-1] for r in clean]
    head = ["monitor", "alarm when", "warned by the onset", "lead (logs)", "lead (KL, nats)", "false alarms",
            "gold kept (hacked runs)", "gold kept (others)", "gold kept (all)", "ms / batch"]
    peak_c = [max(r["gold_ma"]) for r in clean]
    rows.append(["(no stop: the end)", "", "", "", "", "", f2(end_h), f2(end_c), f2(end_h + end_c), ""])
    rows.append(["(the peak, in hindsight)", "", "", "", f2([r["kl"][r["onset"]] for r in hacked]) + " at the onset",
                 "", f2(peak_h), f2(peak_c), f2(peak_h + peak_c), ""])
    return markdown(head, rows)


def load(root, seeds, names=RUNS):
    runs = []
    for s in seeds:
        for name in names:
            d = os.path.join(root, f"s{s}", name)
            if os.path.exists(os.path.join(d, "done")):
                run = label(read_run(d))
                run.update(seed=s, name=name)
                runs.append(run)
    return runs


def figure(run, thresholds, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [k for k in SIGNALS if any(v is not None for v in run[k])]
    fig, axes = plt.subplots(len(keys) + 1, 1, figsize=(7, 1.6 * (len(keys) + 1)), sharex=True)
    x = run["iter"]
    axes[0].plot(x, run["gold_ma"], label="gold (smoothed)")
    axes[0].plot(x, run["proxy_ma"], label="reward model (smoothed)")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"{run['name']}, seed {run['seed']}", fontsize=9)
    for ax, k in zip(axes[1:], keys):
        ax.plot(x, [v if v is not None else float("nan") for v in run[k]])
        ax.set_ylabel(k.split("/")[-1], fontsize=7)
        a = first_alarm(run[k], *thresholds[k]) if k in thresholds else None
        if k in thresholds:
            ax.axhline(thresholds[k][1], color="grey", lw=0.5)
        if a is not None:
            ax.axvline(x[a], color="red", lw=1)
    for ax in axes:
        if run["onset"] is not None:
            ax.axvline(x[run["onset"]], color="black", ls="--", lw=1)
    axes[-1].set_xlabel("iteration (dashed: hacking onset; red: the monitor's alarm)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="out/monitors")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--choose", action="store_true", help="choose thresholds on these seeds, write THRESHOLDS")
    ap.add_argument("--thresholds", default=THRESHOLDS)
    ap.add_argument("--runs", default=",".join(RUNS), help="only these runs (e.g. the GRPO ones, to compare "
                    "judge_agree like for like)")
    ap.add_argument("--figure", default="", help="draw the first hacked run's monitors here (needs matplotlib)")
    a = ap.parse_args()
    names = [n.strip() for n in a.runs.split(",") if n.strip()]
    if set(names) - set(RUNS):
        raise SystemExit(f"error: --runs: unknown {sorted(set(names) - set(RUNS))}; allowed: {', '.join(RUNS)}")
    runs = load(a.root, [s.strip() for s in a.seeds.split(",") if s.strip()], names)
    if not runs:
        raise SystemExit(f"error: no finished run in {a.root} for seeds {a.seeds} (bash experiments/monitors.sh)")
    print(markdown(["seed", "run", "logs", "onset (iter)", "gold: start / peak / end (smoothed)", "KL at the end"],
                   [[r["seed"], r["name"], len(r["gold"]), "-" if r["onset"] is None else r["iter"][r["onset"]],
                     "%.2f / %.2f / %.2f" % (r["gold_ma"][0], max(r["gold_ma"]), r["gold_ma"][-1]), "%.2f" % r["kl"][-1]]
                    for r in runs]))
    if a.choose:
        thresholds = {k: t for k in SIGNALS if (t := choose(runs, k)) is not None}
        with open(a.thresholds, "w") as f:
            json.dump({"seeds": a.seeds, "thresholds": thresholds}, f, indent=1)
        print(f"thresholds chosen on seeds {a.seeds} -> {a.thresholds}")
    else:
        with open(a.thresholds) as f:
            thresholds = json.load(f)["thresholds"]
    print()
    print(report(runs, thresholds))
    hacked = [r for r in runs if r["onset"] is not None]
    if a.figure and hacked:
        figure(hacked[0], thresholds, a.figure)
        print(f"figure: {a.figure}")


if __name__ == "__main__":
    main()
