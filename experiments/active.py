"""
experiments/active.py (goldRLHF): active learning of preference labels. Labels cost money; which pairs
should people be asked about? Labels are bought in rounds from a pool of unlabelled pairs: each round
retrains the reward model on every label bought so far and picks the next round's pairs by a rule:

    random         the baseline: any unlabelled pair
    uncertainty    the reward model's P(a > b) closest to 0.5 (uncertainty sampling, Lewis & Gale 1994)
    disagreement   the committee's members disagree most: the variance of their P_k(a > b) over members
                   (query by committee, Seung et al. 1992; an ensemble of reward models as in reward.py)
    bald           the label's mutual information with the model, H(mean_k P_k) - mean_k H(P_k) (Houlsby
                   et al. 2011, "Bayesian Active Learning by Disagreement"): high where the members are
                   each sure but disagree, low where they all say 0.5, a near-tie whose label is a coin
                   flip that teaches nothing; uncertainty sampling asks about exactly those

    python -m experiments.active                    # the built-in task: every rule, 3 seeds, a table
    python -m experiments.active --rules=random,bald --seeds=1 --init_labels=50 --round_size=50 --n_rounds=4
    python -m experiments.active --pool_path=my_prefs.jsonl --test_path=my_test.jsonl   # a labelled file as the pool

The pool is a labelled pairwise file (feedback.py's pairwise_train.jsonl, or real feedback in any of
feedback_data.py's formats) whose labels stay hidden until a pair is bought, the standard pool-based
simulation (Settles 2009): on the built-in task they are feedback.py's simulated people's majority votes, noise
included. Every rule starts from the same random `init_labels` at a seed and then buys `round_size` per
round for `n_rounds` rounds. The reward model of every rule is trained the same way (model 0 below, from
the SFT start, reward.py's Bradley-Terry loss, a fresh start each round), so the rules differ only in
the labels they bought. disagreement and bald train `ensemble - 1` more members, each on its own
bootstrap resample of the labels with its own head, to form the committee.

Measured, per round (printed, and out_dir/metrics.jsonl): acc_gold (model 0's agreement with the gold
order on the held-out pairs), acc_noisy (with their labels), spearman (with gold, over the held-out
responses), and what was bought: bought_acc_gold (the bought labels' agreement with gold) and
bought_gold_gap (mean |gold(a) - gold(b)| of the bought pairs: near-ties are small). At the end: one
table, mean +- se over seeds per rule and number of labels, and how many labels each rule needed to
reach random's acc_gold at the full budget; out_dir/{rule}_seed{seed}.jsonl holds the labels each run
bought (pairwise format, with the round), which reward.py reads. A rerun with the same config skips the
runs metrics.jsonl already has.
Departures: a tiny model and a few hundred steps per round; each round's picks are the top round_size
scores at once (no batch diversity term, Kirsch et al. 2019's BatchBALD is not attempted).
"""
import json
import os
import random
import time

import torch
import torch.nn.functional as F

import common
import data
import feedback_data
import task
from audit import spearman
from common import log_metrics
from configurator import UserError, configure
from experiments.table import mean_se
from model import score_sequences

# ----------------------------------------------------------------------------- config
out_dir = "out/active"  # metrics.jsonl, the bought labels per run, the figure
sft_path = "out/sft/ckpt.pt"  # the reward models start here (the body of the SFT model, a new scalar head)
pool_path = "out/feedback/pairwise_train.jsonl"  # the pool: labelled pairs whose labels are hidden until bought
test_path = "out/feedback/pairwise_test.jsonl"  # held-out pairs: acc_gold, acc_noisy, spearman
rules = "random,uncertainty,disagreement,bald"  # the acquisition rules compared, comma-separated
seeds = "1,2,3"  # one run per rule and seed (comma-separated)
init_labels = 100  # round 0: this many random pairs (the same ones for every rule at a seed) [>= 2]
round_size = 100  # labels bought per round [>= 1]
n_rounds = 5  # rounds of buying after round 0: the budget is init_labels + n_rounds * round_size [>= 0]
ensemble = 3  # committee size for disagreement and bald (model 0 plus ensemble - 1 bootstrap members) [>= 1]
# each round's reward models
max_iters = 150  # optimizer steps per model per round [> 0]
batch_size = 32  # pairs per step [> 0]
lr = 1e-3  # peak learning rate (cosine schedule, as reward.py) [> 0]
warmup_iters = 20  # linear warmup steps [>= 0]
grad_clip = 1.0  # clip the gradient norm (0: off) [>= 0]
figure = ""  # the curves as a PNG ('' = out_dir/active_learning.png; 'none': no figure; needs matplotlib)
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # (the runs' seeds are `seeds`; this one only seeds the setup) [>= 0]

RULES = ("random", "uncertainty", "disagreement", "bald")


# ----------------------------------------------------------------------------- acquisition
def entropy(p):
    """Binary entropy in nats of probabilities p (any shape), 0 at p = 0 or 1."""
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def acquisition_scores(rule, p, rng=None):
    """How much each unlabelled pair is worth asking about, higher first. p: (K, N) each committee
    member's P(a > b) = sigmoid(r_a - r_b) on N pairs (K = 1 is fine for random and uncertainty; they
    read the mean). rng: a random.Random for 'random'. Returns (N,). Every score is symmetric in a, b."""
    if rule == "random":
        return torch.tensor([rng.random() for _ in range(p.shape[1])])
    if rule == "uncertainty":  # closest to a coin flip
        return -(p.mean(0) - 0.5).abs()
    if rule == "disagreement":  # query by committee: the members' variance
        return p.var(0, unbiased=False)
    if rule == "bald":  # mutual information between the label and the member: H(E p) - E H(p)
        return entropy(p.mean(0)) - entropy(p).mean(0)
    raise ValueError(rule)


def pick(scores, n):
    """The indices of the n highest scores (N,), best first (all N if n > N); equal scores go to the lower
    index. The stage scores only the pairs not bought yet, so nothing is bought twice."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i].item(), i))[:n]


def bootstrap(n, rng):
    """A resample of range(n) with replacement."""
    return [rng.randrange(n) for _ in range(n)]


# ----------------------------------------------------------------------------- the stage
if __name__ == "__main__":
    config = configure(globals(), choices=dict(dtype=("auto", "float32", "bfloat16")))
    rule_list = [r.strip() for r in rules.split(",") if r.strip()]
    bad = [r for r in rule_list if r not in RULES]
    if bad or not rule_list:
        raise UserError(f"--rules={rules!r}: unknown rule {bad[0] if bad else '(none given)'}",
                        fix=f"use some of {', '.join(RULES)}, comma-separated")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds={seeds!r}: not a comma-separated list of integers", fix="e.g. --seeds=1,2,3") from None
    if not seed_list:
        raise UserError("--seeds is empty", fix="e.g. --seeds=1,2,3")
    if ensemble < 2 and {"disagreement", "bald"} & set(rule_list):
        raise UserError(f"--ensemble={ensemble}: disagreement and bald need a committee of at least 2 reward models",
                        fix="pass --ensemble=3 (or drop those rules)")
    if "RANK" in os.environ:
        raise UserError("experiments/active.py runs in one process (each round's models are small)",
                        fix="run it with python, not torchrun")
    rt = common.setup(device, dtype, seed, out_dir)
    budget = init_labels + n_rounds * round_size

    # ----------------------------------------------------------------------------- data
    pool_items, _ = feedback_data.load_feedback(pool_path, "pairwise")
    test_items, _ = feedback_data.load_feedback(test_path, feedback_data.detect_kind(test_path))
    test_pairs = feedback_data.to_pairs(test_items, feedback_data.detect_kind(test_path))
    if budget > len(pool_items):
        raise UserError(f"the budget init_labels + n_rounds * round_size = {budget} is larger than the pool's "
                        f"{len(pool_items)} pairs", pool_path, "lower --n_rounds or --round_size, or give a bigger pool")
    sft, vocab, _ = common.load_model(sft_path)
    tok, T = data.Tokenizer(vocab), sft.config.block_size
    del sft
    # every distinct (prompt, response) once: the pool's and test's pairs point into this list
    texts, index = [], {}
    def idx(prompt, text):
        key = (prompt, text)
        if key not in index:
            index[key] = len(texts)
            texts.append(key)
        return index[key]
    pool = [(idx(it["prompt"], it["texts"][0]), idx(it["prompt"], it["texts"][1])) for it in pool_items]  # (chosen, rejected)
    test = [(idx(p, c), idx(p, r)) for p, c, r in test_pairs]
    test_resp = sorted({i for pair in test for i in pair})
    seqs = [(tok.encode(p, "prompt") + tok.encode(t, "response"))[:T] for p, t in texts]
    known = set(task.all_prompts())
    has_gold = all(p in known for p, _ in texts)  # the built-in task: gold is known
    gold = [task.gold(p, t) for p, t in texts] if has_gold else None
    print(f"pool {len(pool)} pairs ({pool_path}), test {len(test)} pairs; rules {', '.join(rule_list)}; seeds "
          f"{seed_list}; {init_labels} + {n_rounds} x {round_size} = {budget} labels per run")

    first_round = {}  # (run_seed, j) -> round 0's model j: the same labels and seeds for every rule, trained once

    def train_models(pairs, k, run_seed, first=False):
        """k reward models from the SFT start on the bought pairs [(chosen, rejected) index]: model 0 on
        the pairs as they are, models 1.. on bootstrap resamples. Each model's head and batches come from
        run_seed, so two rules at the same seed and round differ only in their pairs (first: round 0, where
        they do not either, so its models are kept for the next rule)."""
        models = []
        for j in range(k):
            if first and (run_seed, j) in first_round:
                models.append(first_round[(run_seed, j)])
                continue
            torch.manual_seed(run_seed * 1000 + j)
            m = common.load_model(sft_path, scalar_head=True)[0].to(rt.device).train()
            rng = random.Random(run_seed * 1000 + j)
            use = pairs if j == 0 else [pairs[i] for i in bootstrap(len(pairs), rng)]
            opt = common.configure_optimizer(m, lr, 0.0)
            for it in range(max_iters):
                common.set_lr(opt, common.cosine_lr(it, lr, warmup_iters, max_iters))
                batch = [use[rng.randrange(len(use))] for _ in range(batch_size)]
                with rt.ctx:
                    r = score_sequences(m, [seqs[i] for pair in batch for i in pair], tok.eot, chunk=2 * batch_size)
                # Bradley-Terry, reward.py's loss without a margin: rows 0, 2, .. chosen, 1, 3, .. rejected
                loss = -F.logsigmoid(r[0::2] - r[1::2]).mean()
                loss.backward()
                common.optimizer_step(opt, m, grad_clip)
            models.append(m.eval())
            if first:
                first_round[(run_seed, j)] = m
        return models

    @torch.no_grad()
    def scores_of(models, which):
        """(K, len(which)) raw rewards of the responses `which` (indices into texts)."""
        with rt.ctx:
            return torch.stack([score_sequences(m, [seqs[i] for i in which], tok.eot).float().cpu() for m in models])

    def evaluate(model):
        r = torch.zeros(len(texts))
        r[test_resp] = scores_of([model], test_resp)[0]
        won = torch.tensor([r[c] > r[x] for c, x in test])
        out = {"acc_noisy": won.float().mean().item()}
        if has_gold:
            d = torch.tensor([gold[c] != gold[x] for c, x in test])
            right = torch.tensor([gold[c] > gold[x] for c, x in test]) == won
            out["acc_gold"] = right[d].float().mean().item()
            out["spearman"] = spearman([r[i].item() for i in test_resp], [gold[i] for i in test_resp])
        return out

    # ----------------------------------------------------------------------------- the runs
    done = {}  # (rule, seed) -> its curve, from an earlier run with the same config
    same = {k: v for k, v in config.items() if k not in ("rules", "seeds", "figure", "device", "out_dir")}
    if os.path.exists(rt.metrics_path):
        for row in data.read_jsonl(rt.metrics_path):
            if "done" in row and row.get("config") == same:
                done[(row["rule"], row["seed"])] = row["curve"]
    for s in seed_list:
        for rule in rule_list:
            if (rule, s) in done:
                print(f"{rule} seed {s}: done in an earlier run ({rt.metrics_path})")
                continue
            rng = random.Random(s)
            bought = rng.sample(range(len(pool)), init_labels)  # the same for every rule at this seed
            rule_rng, curve = random.Random(s * 7919 + RULES.index(rule)), []
            for rnd in range(n_rounds + 1):
                t0 = time.time()
                k = ensemble if rule in ("disagreement", "bald") else 1
                models = train_models([pool[i] for i in bought], k, s * 100 + rnd, first=rnd == 0)
                out = {"rule": rule, "seed": s, "round": rnd, "labels": len(bought), **evaluate(models[0])}
                if has_gold:
                    gaps = [gold[a] - gold[b] for a, b in (pool[i] for i in bought)]
                    out["bought_acc_gold"] = sum(g > 0 for g in gaps) / max(1, sum(g != 0 for g in gaps))
                    out["bought_gold_gap"] = sum(abs(g) for g in gaps) / len(gaps)
                if rnd < n_rounds:  # buy the next round's labels
                    have = set(bought)
                    left = [i for i in range(len(pool)) if i not in have]
                    resp = sorted({j for i in left for j in pool[i]})
                    r = torch.zeros(k, len(texts))
                    r[:, resp] = scores_of(models, resp)
                    p = torch.sigmoid(r[:, [pool[i][0] for i in left]] - r[:, [pool[i][1] for i in left]])
                    sc = acquisition_scores(rule, p, rule_rng)
                    bought += [left[i] for i in pick(sc, round_size)]
                out["round_s"] = time.time() - t0
                log_metrics(rt.metrics_path, out)
                curve.append({k_: out[k_] for k_ in out if k_ not in ("rule", "seed", "round_s")})
            rows = [dict(prompt=texts[pool[i][0]][0], chosen=texts[pool[i][0]][1], rejected=texts[pool[i][1]][1],
                         round=0 if n < init_labels else 1 + (n - init_labels) // round_size) for n, i in enumerate(bought)]
            data.write_jsonl(os.path.join(out_dir, f"{rule}_seed{s}.jsonl"), rows)
            with open(rt.metrics_path, "a") as f:
                f.write(json.dumps({"done": True, "rule": rule, "seed": s, "curve": curve, "config": same}) + "\n")
            done[(rule, s)] = curve

    # ----------------------------------------------------------------------------- the table
    key = "acc_gold" if has_gold else "acc_noisy"
    labels = [init_labels + r * round_size for r in range(n_rounds + 1)]
    curves = {rule: [done[(rule, s)] for s in seed_list] for rule in rule_list}
    mean = {rule: [mean_se([c[r][key] for c in curves[rule]])[0] for r in range(n_rounds + 1)] for rule in rule_list}
    target = mean["random"][-1] if "random" in mean else None
    print(f"\n{key} of the reward model (model 0) against the number of labels, mean +- se over seeds {seed_list}:")
    print(f"{'labels':>8} " + " ".join(f"{rule:>16}" for rule in rule_list))
    for r, n in enumerate(labels):
        print(f"{n:>8} " + " ".join("{:>9.3f} +- {:.3f}".format(*mean_se([c[r][key] for c in curves[rule]]))
                                    for rule in rule_list))
    summary = {}
    for rule in rule_list:
        reach = next((n for n, m in zip(labels, mean[rule]) if target is not None and m >= target), None)
        summary[rule] = {"labels": labels, **{f"{m}_mean": [round(mean_se([c[r][m] for c in curves[rule]])[0], 4)
                         for r in range(n_rounds + 1)] for m in curves[rule][0][0] if m not in ("labels",)},
                         "labels_to_reach_random": reach}
        if has_gold:
            print(f"  {rule:>12}: spearman at {budget} labels {summary[rule]['spearman_mean'][-1]:.3f}, bought labels "
                  f"agree with gold {summary[rule]['bought_acc_gold_mean'][-1]:.3f}, mean |gold gap| "
                  f"{summary[rule]['bought_gold_gap_mean'][-1]:.3f}" + ("" if target is None else
                  f"; reaches random's {target:.3f} (at {budget}) with " +
                  (f"{reach} labels" if reach else f"more than {budget} labels")))
    data.write_jsonl(os.path.join(out_dir, "summary.jsonl"), [{"rule": k, **v} for k, v in summary.items()])

    if figure != "none":
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            plt = None
            print("note: matplotlib is not installed: no figure (pip install matplotlib)")
        if plt is not None:
            metrics = [key] + (["spearman"] if has_gold else [])
            fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6))
            for ax, m in zip(axes if len(metrics) > 1 else [axes], metrics):
                for rule in rule_list:
                    ms = [mean_se([c[r][m] for c in curves[rule]]) for r in range(n_rounds + 1)]
                    ax.errorbar(labels, [a for a, _ in ms], yerr=[b for _, b in ms], label=rule, capsize=2, marker="o", ms=3)
                ax.set_xlabel("labels bought")
                ax.set_ylabel(m)
                ax.grid(alpha=0.3)
            axes[0].legend() if len(metrics) > 1 else axes.legend()
            fig.suptitle("active learning of preference labels ("
                         + ("1 seed)" if len(seed_list) == 1 else f"{len(seed_list)} seeds, mean +- se)"))
            fig.tight_layout()
            path = figure or os.path.join(out_dir, "active_learning.png")
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fig.savefig(path, dpi=120)
            print(f"wrote {path}")
