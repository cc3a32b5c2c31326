"""audit.py's statistics on textbook examples with known answers: agreement (Cohen's and Fleiss' kappa,
Krippendorff's alpha), Dawid-Skene labeler models, and the preference audit (cycles, the fewest labels
any reward must contradict), plus the audit command on the built-in labels."""
import json
import random

import pytest

import audit
from conftest import run


def test_cohen_kappa_textbook():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15: p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert audit.cohen_kappa(a, b) == pytest.approx(0.4)
    assert audit.cohen_kappa(a, a) == 1.0


def test_fleiss_kappa_textbook():
    # Fleiss (1971) as in Wikipedia's worked example: 10 items, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert audit.fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)


def test_krippendorff_alpha_textbook():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing
    # values; alpha = 0.743 (nominal) and 0.849 (interval)
    A = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
    B = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
    C = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
    D = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
    units = [[x for x in col if x is not None] for col in zip(A, B, C, D)]
    assert audit.krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert audit.krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_dawid_skene_finds_the_labeler_who_always_flips():
    """Two careful labelers and one who always gives the other answer: the majority is always right, and
    EM must learn the flipper's confusion matrix as the swap (a flipper is informative, not noise)."""
    rng = random.Random(0)
    truth = {i: rng.randrange(2) for i in range(40)}
    labels = [(i, who, truth[i] if who != "flip" else 1 - truth[i]) for i in truth for who in ("a", "b", "flip")]
    post, conf, prior = audit.dawid_skene(labels, 2)
    assert conf["flip"][0][1] > 0.99 and conf["flip"][1][0] > 0.99
    assert conf["a"][0][0] > 0.99 and conf["a"][1][1] > 0.99
    assert prior[1] == pytest.approx(sum(truth.values()) / 40, abs=1e-3)
    assert all(max(range(2), key=lambda k: post[i][k]) == truth[i] for i in truth)


def test_dawid_skene_beats_the_majority_vote():
    """Two careful labelers, one flipper and two coin-flippers: the majority vote is wrong on some items,
    Dawid-Skene trusts the careful ones, reads the flipper backwards and ignores the coins."""
    rng = random.Random(1)
    truth = {i: rng.randrange(2) for i in range(200)}
    give = {"careful1": lambda t: t, "careful2": lambda t: t, "flip": lambda t: 1 - t,
            "coin1": lambda t: rng.randrange(2), "coin2": lambda t: rng.randrange(2)}
    labels = [(i, who, f(truth[i])) for i in truth for who, f in give.items()]
    majority = {i: int(sum(y for j, _, y in labels if j == i) >= 3) for i in truth}
    post, conf, prior = audit.dawid_skene(labels, 2)
    ds = {i: max(range(2), key=lambda k: post[i][k]) for i in truth}
    acc = lambda guess: sum(guess[i] == truth[i] for i in truth) / len(truth)
    reliability = {who: sum(prior[k] * conf[who][k][k] for k in range(2)) for who in give}
    assert acc(ds) > acc(majority) + 0.1, (acc(ds), acc(majority))
    assert reliability["careful1"] > 0.95 and reliability["flip"] < 0.05
    assert 0.3 < reliability["coin1"] < 0.7


def test_audit_three_cycle_needs_one_reversal():
    rep = audit.audit([("p", "a", "b"), ("p", "b", "c"), ("p", "c", "a")])
    assert rep["min_reversals"] == 1 and rep["max_agreement"] == pytest.approx(2 / 3)
    assert rep["prompts_with_cycles"] == 1 and rep["examples"] == [("p", ["a", "b", "c"])]


def test_audit_two_cycles_sharing_an_edge():
    """a > b > c > a and a > d > c > a share c > a: reversing that one label (the order a, b, d, c) makes the
    graph acyclic, so the bound is 4 of 5 labels."""
    w = {("a", "b"): 1, ("b", "c"): 1, ("c", "a"): 1, ("a", "d"): 1, ("d", "c"): 1}
    assert audit._shortest_cycles(list("abcd"), w) == [["a", "b", "c"], ["a", "d", "c"]]
    n, order = audit._min_reversals(list("abcd"), w)
    assert n == 1 and order.index("a") < order.index("b") < order.index("c") and order.index("d") < order.index("c")
    rep = audit.audit([("p", a, b) for a, b in w])
    assert rep["min_reversals"] == 1 and rep["max_agreement"] == pytest.approx(0.8)


def test_audit_two_rankings_that_disagree_about_one_item():
    """Rankings a > b > c > d and b > c > d > a (12 pairs): they disagree on a vs b, c and d, each a pair
    labelled both ways, so any order contradicts 3 labels (b, c, d, a does exactly that): bound 0.75."""
    pairs = [("q", r[i], r[j]) for r in ("abcd", "bcda") for i in range(4) for j in range(i + 1, 4)]
    rep = audit.audit(pairs)
    assert rep["n_labels"] == 12 and rep["contradictions"] == 3 and rep["min_reversals"] == 3
    assert rep["max_agreement"] == pytest.approx(0.75) and rep["prompts_with_cycles"] == 0


def test_audit_solves_each_connected_component_exactly():
    """A prompt's labels split into groups that share no response (each group of K samples is labelled on
    its own): 4 disjoint 3-cycles over 12 + 4 = 16 responses are solved exactly, 1 reversal each; one
    connected component of 13 responses falls back to the greedy order and says so."""
    pairs = [("p", f"{g}{a}", f"{g}{b}") for g in "wxyz" for a, b in (("a", "b"), ("b", "c"), ("c", "a"))]
    pairs += [("p", "za", "zd")]
    rep = audit.audit(pairs)
    assert rep["exact"] and rep["min_reversals"] == 4 and rep["max_agreement"] == pytest.approx(1 - 4 / 13)
    chain = [("q", f"r{i:02d}", f"r{i + 1:02d}") for i in range(12)]  # 13 responses, one component, no cycle
    rep = audit.audit(chain)
    assert not rep["exact"] and rep["min_reversals"] == 0


def test_audit_greedy_above_twelve_nodes_is_an_upper_bound():
    """Above 12 responses the exact search gives way to Eades et al.'s greedy order. Its count is the weight
    of the labels its order contradicts (a reachable upper bound), and where the optimum is known it finds
    it: a shuffled transitive tournament (0, its order); every pair labelled twice the true way, some once
    the other (the true order, one per reversed label: flipping any pair costs 2 - 1 more); four disjoint
    3-cycles and a lone node (1 reversal each)."""
    def contradicted(order, w):
        pos = {v: i for i, v in enumerate(order)}
        return sum(c for (a, b), c in w.items() if pos[a] > pos[b])

    nodes = [f"r{i:02d}" for i in range(15)]
    rng = random.Random(0)
    shuffled = rng.sample(nodes, len(nodes))
    w = {(a, b): 1 for i, a in enumerate(nodes) for b in nodes[i + 1:]}
    assert audit._min_reversals(shuffled, w) == (0, nodes)
    nodes = nodes[:13]
    w = {(a, b): 2 for i, a in enumerate(nodes) for b in nodes[i + 1:]}
    back = {(b, a): 1 for (a, b) in w if rng.random() < 0.3}
    assert audit._min_reversals(rng.sample(nodes, 13), {**w, **back}) == (len(back), nodes) and len(back) > 5
    cycles = {(f"{g}{a}", f"{g}{b}"): 1 for g in "wxyz" for a, b in (("a", "b"), ("b", "c"), ("c", "a"))}
    n, order = audit._min_reversals(sorted({x for e in cycles for x in e}) + ["v"], cycles)
    assert n == 4 == contradicted(order, cycles)
    # a random graph: the greedy's order is a permutation and its count what that order contradicts, at
    # least the exact answer (both run on the same 8 nodes: 5 isolated ones force the greedy)
    small = [f"s{i}" for i in range(8)]
    w = {(a, b): rng.randint(1, 3) for a in small for b in small if a != b and rng.random() < 0.5}
    exact, exact_order = audit._min_reversals(small, w)
    greedy, order = audit._min_reversals(small + [f"x{i}" for i in range(5)], w)  # 13 nodes: greedy path
    assert sorted(order) == sorted(small + [f"x{i}" for i in range(5)]) and greedy == contradicted(order, w)
    assert exact == contradicted(exact_order, w) and greedy >= exact > 0


def test_audit_command(reward_dir, tmp_path):
    """python audit.py --data_path=... on the built-in labels: the bound, the reward model beside it, and its
    --json_line (the same numbers as one JSON object on the last line)."""
    path = f"{reward_dir}/feedback/pairwise_train.jsonl"
    p = run("audit.py", f"--data_path={path}", f"--reward_path={reward_dir}", "--json_line=True")
    model = float(p.stdout.split(" agrees with ")[1].split()[0])
    j = json.loads(p.stdout.strip().splitlines()[-1])  # the same numbers for scripts (experiments/audit.sh)
    assert j["kind"] == "pairwise" and j["n_labels"] == int(p.stdout.split(" pairwise labels")[0].split()[-1])
    assert round(j["reward_agreement"], 4) == model and j["prompts_with_cycles"] == int(p.stdout.split("cycle: ")[1].split()[0])
    assert f"{j['max_agreement']:.4f}" in p.stdout and 0 <= j["min_reversals"] < j["n_labels"]
    if "agree with more than " in p.stdout:  # every component small enough for the exact search: a true bound
        bound = float(p.stdout.split("agree with more than ")[1].split()[0])
        assert 0.9 < bound <= 1.0 and 0.5 < model <= bound, p.stdout
    else:  # 16 responses per prompt (the default feedback): the greedy order, an agreement that is reachable
        reached = float(p.stdout.split("an ordering agreeing with ")[1].split()[0])
        assert 0.9 < reached <= 1.0 and 0.5 < model < reached, p.stdout
    bad = tmp_path / "x.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    p = run("audit.py", f"--data_path={bad}", ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1


def test_repeat_consistency_worked_example():
    """Item a rated 4, 4, 2 (pairs 4-4, 4-2, 4-2), item c 1, 1, item b once: 4 pairs, 2 equal, |diff| 0, 2, 2, 0."""
    rc = audit.repeat_consistency([("a", 4), ("a", 4), ("b", 5), ("a", 2), ("c", 1), ("c", 1)])
    assert rc == dict(n_repeated=2, n_pairs=4, agreement=0.5, mean_abs_diff=1.0)
    thumbs = audit.repeat_consistency([(("p", "r"), True), (("p", "r"), False), (("p", "s"), True)])
    assert thumbs["agreement"] == 0.0 and thumbs["mean_abs_diff"] == 1.0 and thumbs["n_repeated"] == 1
    none = audit.repeat_consistency([("a", 1), ("b", 2)])
    assert none["n_pairs"] == 0 and none["agreement"] != none["agreement"]  # nan: nothing repeated
