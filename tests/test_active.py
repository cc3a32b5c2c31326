"""experiments/active.py: the acquisition rules by hand on toy pools, the stage on a small pool of the
fixture's feedback (its round loop, the labels it bought, resuming, the learning), and its bad input."""
import json
import math
import os
import random

import torch

from conftest import first_rows, read_metrics, run
from experiments.active import acquisition_scores, bootstrap, entropy, pick


def test_acquisition_by_hand():
    # 3 members' P(a > b) on 4 pairs: a confident pair, a coin flip all agree on, a split committee, a mild one
    p = torch.tensor([[0.95, 0.5, 0.9, 0.7],
                      [0.95, 0.5, 0.1, 0.6],
                      [0.95, 0.5, 0.5, 0.8]])
    unc = acquisition_scores("uncertainty", p)  # -|mean - 0.5|: means 0.95, 0.5, 0.5, 0.7
    assert torch.allclose(unc, torch.tensor([-0.45, 0.0, 0.0, -0.2]), atol=1e-6)
    assert pick(unc, 1) == [1]  # the pair at P = 0.5 (the tie with pair 2 goes to the lower index)
    dis = acquisition_scores("disagreement", p)  # population variance over members
    assert torch.allclose(dis, torch.tensor([0.0, 0.0, 0.32 / 3 * 1.0, 0.02 / 3]), atol=1e-6)
    assert pick(dis, 1) == [2]
    # BALD: H(mean) - mean H. Pair 2: H(0.5) - (H(0.9) + H(0.1) + H(0.5)) / 3; pair 1 (all say 0.5): 0
    H = lambda q: -(q * math.log(q) + (1 - q) * math.log(1 - q))
    bald = acquisition_scores("bald", p)
    want = [0.0, 0.0, H(0.5) - (2 * H(0.9) + H(0.5)) / 3, H(0.7) - (H(0.7) + H(0.6) + H(0.8)) / 3]
    assert torch.allclose(bald, torch.tensor(want), atol=1e-6)
    assert pick(bald, 2) == [2, 3]  # the coin flip everyone agrees on teaches nothing: last
    assert abs(entropy(torch.tensor(0.5)).item() - math.log(2)) < 1e-7 and entropy(torch.tensor(1.0)).item() < 1e-9
    # every rule is symmetric in a, b: P -> 1 - P changes no score
    for rule in ("uncertainty", "disagreement", "bald"):
        assert torch.allclose(acquisition_scores(rule, p), acquisition_scores(rule, 1 - p), atol=1e-6)
    # random: the rng's draws, reproducible
    assert torch.equal(acquisition_scores("random", p, random.Random(3)), acquisition_scores("random", p, random.Random(3)))


def test_pick_and_bootstrap():
    s = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.3])
    assert pick(s, 3) == [1, 3, 2]  # the tie at 0.9 goes to the lower index
    assert pick(s, 9) == [1, 3, 2, 4, 0]
    b = bootstrap(1000, random.Random(0))
    assert len(b) == 1000 and all(0 <= i < 1000 for i in b)
    assert 550 < len(set(b)) < 720  # about 1 - 1/e = 63% distinct


def _pool(reward_dir, n=400):
    """The first n of the fixture's feedback pairs as a small pool."""
    return first_rows(reward_dir, "pairwise_train", n)


def test_active_learning(sft_dir, reward_dir, tmp_path):
    """Two rules, one seed, 20 random labels then one round of 180 on a 400-pair pool: the round loop,
    what was bought, the table, resuming, and that BALD's labels train a better reward model (the other rules'
    scores are checked by hand above; a third rule here cost CI a minute). (Whether a rule
    beats random needs several seeds and more rounds than CI has: README, experiments/active.sh.)"""
    out = str(tmp_path / "al")
    rules = ("random", "bald")
    args = [f"--out_dir={out}", f"--sft_path={sft_dir}", f"--pool_path={_pool(reward_dir)}",
            f"--test_path={reward_dir}/feedback/pairwise_test.jsonl", f"--rules={','.join(rules)}", "--seeds=1",
            "--init_labels=20", "--round_size=180", "--n_rounds=1", "--ensemble=2", "--max_iters=80",
            "--warmup_iters=5", "--figure=none"]
    p = run("-m", "experiments.active", *args)
    rows = [r for r in read_metrics(out) if "round" in r]
    assert [(r["rule"], r["round"], r["labels"]) for r in rows] == [(rule, n, 20 + 180 * n) for rule in rules for n in (0, 1)]
    # round 0: the same random labels and the same training for every rule
    first = [r for r in rows if r["round"] == 0]
    assert len({(r["acc_gold"], r["spearman"], r["bought_gold_gap"]) for r in first}) == 1, first
    picks = {}
    for rule in rules:
        bought = [json.loads(line) for line in open(os.path.join(out, f"{rule}_seed1.jsonl"))]
        assert len(bought) == 200 and [b["round"] for b in bought] == [0] * 20 + [1] * 180
        picks[rule] = {(b["prompt"], b["chosen"], b["rejected"]) for b in bought}
        assert len(picks[rule]) >= 195  # (the pool repeats a few pairs)
    # the same start, different purchases
    assert picks["random"] != picks["bald"]
    # learning, as far as CI's budget shows it: on task v2 a reward model of 20 labels and one of 200 random
    # labels both learn little beyond length in 80 steps (acc_gold 0.599 and 0.599 on the fixture,
    # 2026-12-07; at 150 steps and lr 3e-4, 0.580 and 0.587); BALD's 200 did better (0.630; 0.620). On task
    # v1 random's gain was 0.085 and 0.05 was asserted. (Uncertainty sampling from the 20-label model may
    # not gain: the cold start's sampling bias; seen, not asserted)
    acc = {r["rule"]: {} for r in rows}
    for r in rows:
        acc[r["rule"]][r["round"]] = r["acc_gold"]
    assert acc["bald"][1] > acc["bald"][0] + 0.015 and acc["random"][1] >= acc["random"][0] - 0.02, acc
    assert "reaches random's" in p.stdout and os.path.exists(os.path.join(out, "summary.jsonl"))
    # the bought labels are a feedback file reward.py reads
    import feedback_data
    items, _ = feedback_data.load_feedback(os.path.join(out, "bald_seed1.jsonl"), "pairwise")
    assert len(items) == 200
    # a rerun with the same config reuses every finished run and prints the same table
    again = run("-m", "experiments.active", *args)
    assert again.stdout.count("done in an earlier run") == 2
    table = lambda text: text[text.index("acc_gold of the reward model"):]
    assert table(again.stdout) == table(p.stdout)


def test_bad_input(sft_dir, reward_dir, tmp_path):
    pool = _pool(reward_dir)
    base = [f"--out_dir={tmp_path}/a", f"--sft_path={sft_dir}", f"--pool_path={pool}",
            f"--test_path={reward_dir}/feedback/pairwise_test.jsonl"]
    for extra, msg in [(["--init_labels=100", "--round_size=100", "--n_rounds=4"], "is larger than the pool's 400 pairs"),
                       (["--rules=random,oracle"], "unknown rule oracle"),
                       (["--rules=bald", "--ensemble=1"], "need a committee of at least 2"),
                       (["--seeds=1,x"], "not a comma-separated list of integers"),
                       (["--round_size=0"], "--round_size=0: must be >= 1"),
                       ([f"--pool_path={tmp_path}/nope.jsonl"], "nope.jsonl")]:
        p = run("-m", "experiments.active", *base, *extra, ok=False)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr, (extra, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = run("-m", "experiments.active", *base, "--init_labels=100", "--round_size=100", "--n_rounds=4", ok=False)
    assert pool in p.stderr  # the error names the pool file
