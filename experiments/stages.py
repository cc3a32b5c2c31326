"""
experiments/stages.py: RESULTS.md section 2's tables, from experiments/stages.sh's runs (one run a row, the
demo's seed): SFT's evaluations, the feedback report, a reward model from every kind of feedback, PPO over
its iterations, with whitened rewards and with no KL penalty, DPO and its variants, GRPO on gold and on the
reward model and with each KL term, best-of-N, and every method side by side.

    python -m experiments.stages --root=out/stages

A run's seconds are its process's, start to end (stages.sh's times.tsv; two runs side by side on 2 cores).
"""
import argparse
import os
import sys

from configurator import UserError
from experiments import table
from experiments.table import cell, markdown, read_rows

RM_KINDS = (("`pairwise` / `bt` Bradley-Terry (default)", "reward"), ("`ties` / `rao_kupper`", "rm_ties"),
            ("`rankings` / `pl` Plackett-Luce", "rm_rankings_pl"), ("`rankings` / `pairs`", "rm_rankings_pairs"),
            ("`likert` / `mse`", "rm_likert_mse"), ("`likert` / `ordinal`", "rm_likert_ordinal"))
DPO = (("`sigmoid` (DPO, the default)", "dpo"), ("`sigmoid --label_smoothing=0.1` (cDPO)", "dpo_cdpo"),
       ("`robust --label_smoothing=0.1`", "dpo_robust"), ("`ipo`", "dpo_ipo"), ("`hinge` (SLiC)", "dpo_hinge"),
       ("`simpo`", "dpo_simpo"), ("`sigmoid --rpo_alpha=1` (RPO)", "dpo_rpo"))
GRPO_KL = (("`k3` (default)", "0.02", "grpo"), ("`full`", "0.02", "grpo_full"), ("`k3`", "0.1", "grpo_k3_0.1"),
           ("`full`", "0.1", "grpo_full_0.1"))
EVAL = ("gold", "kl", "parse", "response_len", "sycophancy", "reads_prompt", "distinct")
FEEDBACK = ("n_responses", "n_pairwise", "n_rankings", "n_likert", "agreement/pairwise", "agreement/likert",
            "agreement/fleiss_kappa", "reliability/careful", "reliability/verbose", "reliability/positive",
            "train/labels_acc_gold", "test/labels_acc_gold", "train/prompts_with_cycles", "train/n_prompts",
            "train/audit_max_agreement", "repeats/binary_agreement", "repeats/likert_agreement", "feedback_s")


def f(x, spec=".2f"):
    return "-" if x is None else f"{x:{spec}}"


def finished(run):
    """A run's rows if it finished (stages.sh marks it `done`), else none: a run still going is left out."""
    return read_rows(run) if os.path.exists(os.path.join(run, "done")) else []


def evals(run):
    """table.evals (the held-out evaluations, in order) of a finished run; none for a run still going."""
    return table.evals(run) if os.path.exists(os.path.join(run, "done")) else []


def seconds(run):
    """The run's wall seconds from times.tsv beside it (the last line for its name), None if not there."""
    path = os.path.join(os.path.dirname(run), "times.tsv")
    lines = open(path).read().split("\n") if os.path.exists(path) else []
    got = [float(line.split("\t")[1]) for line in lines if line.startswith(os.path.basename(run) + "\t")]
    return got[-1] if got else None


def over_iters(run, keys, names=None):
    """One column per evaluation, one line per key: a stage's trajectory ('not run' where it has none)."""
    rows = evals(run)
    if not rows:
        return f"(not run: {run})"
    head = ["iteration"] + [str(r.get("iter", "")) for r in rows]
    return markdown(head, [[n] + [f(r.get(k)) for r in rows] for k, n in zip(keys, names or keys)])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m experiments.stages", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="out/stages", help="experiments/stages.sh's output folder")
    args = ap.parse_args(argv)
    p = lambda name: os.path.join(args.root, name)
    if not os.path.exists(p("sft/done")):
        raise UserError("no finished SFT run", p("sft"), "run bash experiments/stages.sh first")

    print("## 2.1 SFT\n")
    print(markdown(["iteration", "val loss", "gold", "parse", "response length", "reads_prompt", "distinct"],
                   [[r["iter"], f(r.get("val_loss")), f(r["gold"]), f(r["parse"]), f(r.get("response_len"), ".1f"),
                     f(r["reads_prompt"]), f(r["distinct"], ".0f")] for r in evals(p("sft"))]))

    print("\n## 2.2 The feedback report\n")
    rep = {k: v for r in finished(p("feedback")) for k, v in r.items()}
    print(markdown(["number", "value"], [[k, f(rep[k], ".3f") if isinstance(rep[k], float) else rep[k]]
                                         for k in FEEDBACK if k in rep]))

    print("\n## 2.3 The reward model, every kind of feedback\n")
    rm_rows = []
    for label, name in RM_KINDS:
        rows = [r for r in finished(p(name)) if "acc_gold" in r]
        if rows:
            r = rows[-1]
            rm_rows.append([label, f(r.get("acc_noisy"), ".3f"), f(r["acc_gold"], ".3f"), f(r.get("spearman"), ".3f"),
                            f(r.get("ece"), ".3f"), f(r.get("probe/length")), f(r.get("probe/positivity")),
                            f(seconds(p(name)), ".0f")])
    last = [r for r in finished(p("reward")) if "length_acc_gold" in r][-1]
    rm_rows.insert(0, ["length alone (the longer, or shorter, wins)", f(last["length_acc_noisy"], ".3f"),
                       f(last["length_acc_gold"], ".3f"), f(last.get("length_spearman"), ".3f"), "", "", "", ""])
    print(markdown(["`--label_kind` / `--loss_type`", "acc_noisy", "acc_gold", "spearman", "ECE", "probe length",
                    "probe positivity", "seconds"], rm_rows))

    print("\n## 2.4 PPO\n")
    keys = ("reward", "gold", "kl", "parse", "response_len", "sycophancy", "gold/faithfulness", "gold/hallucination")
    print(over_iters(p("ppo"), keys))

    print("\n## 2.5 PPO reward whitening (gold / KL at the last evaluation, seeds 1, 2, 3)\n")
    wrows = []
    for label, pre in (("`False` (default)", "ppo_s"), ("`True`", "ppo_whiten_s")):
        ends = [evals(p(f"{pre}{s}")) for s in (1, 2, 3)]
        ends = [e[-1] for e in ends if e]
        wrows.append([label, ", ".join(f(e["gold"], ".3f") for e in ends), cell([e["gold"] for e in ends], ".3f"),
                      cell([e["kl"] for e in ends]), cell([e["parse"] for e in ends])])
    print(markdown(["`--whiten_rewards`", "gold (seeds 1, 2, 3)", "mean ± SE", "KL", "parse"], wrows))

    print("\n## 2.6 PPO without a KL penalty\n")
    print(over_iters(p("ppo_beta0"), ("reward", "gold", "kl", "parse", "response_len", "sycophancy",
                                       "gold/hallucination")))

    print("\n## 2.7 DPO and its variants\n")
    drows = [["SFT model (start)"] + [f(evals(p("dpo"))[0].get(k)) for k in ("gold", "parse", "kl")] + ["-", ""]]
    for label, name in DPO:
        e = evals(p(name))
        val = [r for r in finished(p(name)) if "val_rewards/accuracies" in r]
        if e:
            drows.append([label, f(e[-1]["gold"]), f(e[-1]["parse"]), f(e[-1]["kl"]),
                          f(val[-1]["val_rewards/accuracies"], ".3f") if val else "-", f(seconds(p(name)), ".0f")])
    print(markdown(["`--loss_type` (extra)", "gold", "parse", "KL", "val `rewards/accuracies`", "seconds"], drows))

    print("\n## 2.8 GRPO, gold reward vs reward model\n")
    for label, name in (("`gold` (default, verifiable)", "grpo"), ("`rm` (the reward model)", "grpo_rm")):
        print(f"`--reward_fns` {label}, {f(seconds(p(name)), '.0f')} s:\n")
        print(over_iters(p(name), ("gold", "kl", "parse", "response_len", "sycophancy")) + "\n")

    print("## 2.9 GRPO's KL term: k3 vs exact\n")
    krows = []
    for label, coef, name in GRPO_KL:
        e, train = evals(p(name)), [r for r in finished(p(name)) if "entropy" in r]
        if e:
            krows.append([label, coef, f(e[-1]["gold"]), f(e[-1]["kl"]), f(train[-1]["entropy"]),
                          f(max(r["kl"] for r in train))])
    print(markdown(["`--kl_estimator`", "`--kl_coef`", "gold", "KL", "entropy (last train log)",
                    "largest train-log KL"], krows))

    print("\n## 2.10 Best-of-N\n")
    bon = evals(p("sample"))
    print(markdown(["N"] + [str(r["n"]) for r in bon],
                   [[n] + [f(r.get(k)) for r in bon] for k, n in (("kl", "KL (analytic)"), ("reward", "reward (RM)"),
                                                                 ("gold", "gold"), ("sycophancy", "sycophancy"))]))

    print("\n## 2.11 Side by side\n")
    side = (("SFT", "sft"), ("best-of-16 with the reward model", "sample"), ("DPO, `sigmoid`", "dpo"),
            ("DPO, conservative (eps 0.1)", "dpo_cdpo"), ("PPO, reward model, adaptive KL", "ppo"),
            ("PPO, reward model, no KL penalty, 150 iterations", "ppo_beta0"), ("GRPO, gold reward", "grpo"),
            ("GRPO, reward model", "grpo_rm"))
    srows = []
    for label, name in side:
        e = evals(p(name))
        if e:
            srows.append([label] + [f(e[-1].get(k), ".1f" if k in ("response_len", "distinct") else ".2f")
                                    for k in EVAL] + [f(seconds(p(name)), ".0f")])
    print(markdown(["method"] + list(EVAL) + ["seconds"], srows))


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
