"""
audit.py (goldRLHF): how far to trust feedback. Agreement between labelers (Cohen's and Fleiss' kappa,
Krippendorff's alpha), a model of every labeler (Dawid-Skene EM: each one's confusion matrix, and the
items' true labels, from the labels alone), and the preference audit: a scalar reward orders each
prompt's responses, so on labels with contradictions or intransitive cycles (a > b > c > a) it must
disagree with some; the fewest it must (the minimum feedback arc set) bounds the accuracy any reward
model can reach on those labels; and for ratings and thumbs, how consistent the labels of repeated
items are. As a command, for any feedback file (pairwise, ties, rankings, Likert, binary):

    python audit.py --data_path=out/feedback/pairwise_train.jsonl [--reward_path=out/reward]

prints the contradictions, the shortest cycles, the bound and, given a reward model, its own agreement
(feedback.py reports the same for the files it writes).
"""
import math
from itertools import combinations

import torch

import common
import data
from configurator import UserError, configure
from model import score_sequences

data_path = ""  # a feedback file of any kind (pairwise, ties, rankings, likert, binary) to audit
reward_path = ""  # optional: a reward model (reward.py) whose agreement with the same labels is printed beside the bound
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', ...


# ----------------------------------------------------------------------------- agreement and labeler models
def cohen_kappa(a, b):
    """Cohen's kappa (1960) of two labelers' labels on the same items: (p_o - p_e) / (1 - p_e), p_o the
    observed agreement, p_e the agreement expected from each labeler's own label frequencies."""
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(table):
    """Fleiss' kappa (1971): table[i][j] = how many of the n raters put item i in category j (n the same
    for every item). (P - P_e) / (1 - P_e), P the mean pairwise agreement per item, P_e = sum_j p_j^2."""
    N, n = len(table), sum(table[0])
    p = [sum(row[j] for row in table) / (N * n) for j in range(len(table[0]))]
    P = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in table) / N
    P_e = sum(q * q for q in p)
    return 1.0 if P_e == 1 else (P - P_e) / (1 - P_e)


def krippendorff_alpha(units, metric="nominal"):
    """Krippendorff's alpha (2011, "Computing Krippendorff's alpha-reliability"): units is a list of the
    values the labelers gave each item (missing ones left out; items with fewer than 2 values ignored).
    1 - D_o / D_e from the coincidence matrix; metric 'nominal' (delta = [c != k]) or 'interval'
    (delta = (c - k)^2)."""
    delta = (lambda c, k: float(c != k)) if metric == "nominal" else (lambda c, k: (c - k) ** 2)
    o = {}  # coincidences o[(c, k)]: each ordered pair of values within a unit, weighted 1 / (m_u - 1)
    for vals in units:
        m = len(vals)
        for i, c in enumerate(vals):
            for j, k in enumerate(vals):
                if i != j:
                    o[(c, k)] = o.get((c, k), 0.0) + 1.0 / (m - 1)
    n_c = {}
    for (c, _), w in o.items():
        n_c[c] = n_c.get(c, 0.0) + w
    n = sum(n_c.values())
    d_o = sum(w * delta(c, k) for (c, k), w in o.items())
    d_e = sum(n_c[c] * n_c[k] * delta(c, k) for c in n_c for k in n_c) / (n - 1)
    return 1.0 if d_e == 0 else 1.0 - d_o / d_e


def dawid_skene(labels, n_classes, iters=50, smoothing=0.01):
    """Dawid & Skene (1979): each labeler l has a confusion matrix pi_l[true][given]; EM finds them and the
    items' true classes from labels alone. labels: (item, labeler, given class) triples, classes 0..K-1.
    Starts from the (soft) majority vote. Returns (posterior {item: [P(class k)]}, confusion {labeler:
    K x K rows}, prior [K]); a labeler's reliability is sum_k prior_k confusion[k][k]. smoothing: pseudo-
    counts added to every confusion cell, so an unseen cell is not exactly 0."""
    by_item = {}
    for item, lab, y in labels:
        by_item.setdefault(item, []).append((lab, y))
    post = {i: [sum(y == k for _, y in ys) / len(ys) for k in range(n_classes)] for i, ys in by_item.items()}
    labelers = sorted({lab for _, lab, _ in labels}, key=str)
    for _ in range(iters):
        prior = [sum(p[k] for p in post.values()) / len(post) for k in range(n_classes)]  # M-step
        conf = {lab: [[smoothing] * n_classes for _ in range(n_classes)] for lab in labelers}
        for i, ys in by_item.items():
            for lab, y in ys:
                for k in range(n_classes):
                    conf[lab][k][y] += post[i][k]
        for lab in labelers:
            conf[lab] = [[c / sum(row) for c in row] for row in conf[lab]]
        new = {}  # E-step: P(true = k | item's labels) in log space
        for i, ys in by_item.items():
            logp = [math.log(max(prior[k], 1e-300)) + sum(math.log(conf[lab][k][y]) for lab, y in ys)
                    for k in range(n_classes)]
            top = max(logp)
            w = [math.exp(v - top) for v in logp]
            new[i] = [v / sum(w) for v in w]
        done = max(abs(a - b) for i in post for a, b in zip(post[i], new[i])) < 1e-9
        post = new
        if done:
            break
    return post, conf, prior


def repeat_consistency(rows):
    """How consistent the labels of a repeated item are (the same response to the same prompt, labelled
    again whenever it comes up again; the tutorials' "quality checks"): rows are (item key, label) with
    numeric or boolean labels (a Likert score, a thumbs up). Over every pair of labels of the same item:
    agreement, the share that are equal, and mean_abs_diff, the mean |a - b|; n_repeated items were
    labelled more than once, n_pairs pairs compared (0: agreement and mean_abs_diff are nan)."""
    by_item = {}
    for key, y in rows:
        by_item.setdefault(key, []).append(float(y))
    pairs = [(a, b) for ys in by_item.values() for a, b in combinations(ys, 2)]
    n = len(pairs)
    return dict(n_repeated=sum(len(ys) > 1 for ys in by_item.values()), n_pairs=n,
                agreement=sum(a == b for a, b in pairs) / n if n else float("nan"),
                mean_abs_diff=sum(abs(a - b) for a, b in pairs) / n if n else float("nan"))


# ----------------------------------------------------------------------------- the preference audit
def _min_reversals(nodes, w):
    """The fewest labels (weights w[(a, b)]: how often a was preferred to b) that any ordering of `nodes`
    must contradict: the minimum feedback arc set. Exact by dynamic programming over the subsets placed at
    the top (2^n n^2; n <= 12); above that Eades, Lin & Smyth's (1993) greedy ordering, an upper bound.
    Returns (reversals, an ordering achieving it, best first)."""
    n = len(nodes)
    beats = [[w.get((nodes[i], nodes[j]), 0) for j in range(n)] for i in range(n)]
    if n <= 12:
        best, how = {0: 0}, {}
        for S in range(1 << n):
            if S not in best:
                continue
            for v in range(n):
                if not S >> v & 1:  # v goes just below every node of S: its wins over S are contradicted
                    cost = best[S] + sum(beats[v][u] for u in range(n) if S >> u & 1)
                    T = S | 1 << v
                    if cost < best.get(T, float("inf")):
                        best[T], how[T] = cost, (S, v)
        order, S = [], (1 << n) - 1
        while S:
            S, v = how[S]
            order.append(v)
        return best[(1 << n) - 1], [nodes[v] for v in reversed(order)]
    left, top, bottom = set(range(n)), [], []
    while left:  # Eades et al.: sinks to the bottom, sources to the top, else the largest out - in
        out = {v: sum(beats[v][u] for u in left if u != v) for v in left}
        inn = {v: sum(beats[u][v] for u in left if u != v) for v in left}
        v = next((v for v in left if out[v] == 0), None)
        if v is not None:
            bottom.insert(0, v)
        else:
            v = next((v for v in left if inn[v] == 0), None) or max(left, key=lambda v: out[v] - inn[v])
            top.append(v)
        left.remove(v)
    order = top + bottom
    pos = {v: i for i, v in enumerate(order)}
    return sum(beats[a][b] for a in range(n) for b in range(n) if pos[a] > pos[b]), [nodes[v] for v in order]


def _shortest_cycles(nodes, w, limit=3):
    """Up to `limit` shortest intransitive cycles of the majority graph (a -> b when a was preferred to b
    more often than the reverse; such a cycle has 3 or more nodes), each a list of nodes starting at its
    smallest, found by a breadth-first search from every node."""
    succ = {a: [b for b in nodes if w.get((a, b), 0) > w.get((b, a), 0)] for a in nodes}
    found = []
    for s in nodes:
        prev, frontier, closing = {s: None}, [s], None
        while frontier and closing is None:
            closing = next((x for x in frontier if s in succ[x]), None)
            nxt = []
            for x in frontier if closing is None else []:
                for y in succ[x]:
                    if y not in prev:
                        prev[y] = x
                        nxt.append(y)
            frontier = nxt
        if closing is not None:
            cyc, x = [], closing
            while x is not None:
                cyc.insert(0, x)
                x = prev[x]
            k = cyc.index(min(cyc, key=str))
            if cyc[k:] + cyc[:k] not in found:
                found.append(cyc[k:] + cyc[:k])
    return sorted(found, key=len)[:limit]


def _components(nodes, w):
    """The weakly connected components of the label graph (no label joins two of them, so an ordering's
    contradictions add up over components and each can be solved alone)."""
    parent = {v: v for v in nodes}
    def find(v):
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v
    for a, b in w:
        parent[find(a)] = find(b)
    groups = {}
    for v in nodes:
        groups.setdefault(find(v), []).append(v)
    return list(groups.values())


def audit(pairs):
    """The preference audit: pairs are (prompt, preferred, other) labels (rankings give all their pairs).
    Per prompt the labels form a directed graph; a scalar reward orders each prompt's responses, so it
    contradicts at least the minimum feedback arc set of that graph, solved per connected component.
    Returns a dict: n_labels, min_reversals (summed), exact (every component had at most 12 responses,
    so min_reversals is the minimum; else a greedy upper bound on it), max_agreement = 1 - min_reversals
    / n_labels (exact: the highest pairwise accuracy any reward model can reach on these labels; else a
    value some ordering reaches), contradictions (pairs labelled both ways), prompts_with_cycles, and
    examples: up to 3 prompts' shortest intransitive cycles."""
    graphs = {}
    for p, a, b in pairs:
        w = graphs.setdefault(p, {})
        w[(a, b)] = w.get((a, b), 0) + 1
    out = dict(n_labels=len(pairs), min_reversals=0, exact=True, contradictions=0, prompts_with_cycles=0, examples=[])
    for p, w in graphs.items():
        nodes = sorted({x for e in w for x in e}, key=str)
        for comp in _components(nodes, w):
            inside = set(comp)
            out["min_reversals"] += _min_reversals(comp, {e: c for e, c in w.items() if e[0] in inside})[0]
            out["exact"] &= len(comp) <= 12
        out["contradictions"] += sum(1 for (a, b) in w if (b, a) in w and str(a) < str(b))
        cycles = _shortest_cycles(nodes, w)
        if cycles:
            out["prompts_with_cycles"] += 1
            if len(out["examples"]) < 3:
                out["examples"].append((p, cycles[0]))
    out["max_agreement"] = 1 - out["min_reversals"] / max(1, out["n_labels"])
    return out


if __name__ == "__main__":
    import feedback  # (imports this module's functions for its own report)
    configure(globals())
    if not data_path:
        raise UserError("nothing to audit", fix="pass --data_path=feedback.jsonl (pairwise, ties, rankings, likert or binary)")
    kind = feedback.detect_kind(data_path)
    items, skipped = feedback.load_feedback(data_path, kind)
    pairs = feedback.to_pairs(items, kind)
    if kind in ("likert", "binary"):  # the same response to the same prompt, labelled more than once
        rc = repeat_consistency([((it["prompt"], it["texts"][0]), it["y"]) for it in items])
        print(f"repeated items: {rc['n_repeated']} responses labelled more than once ({rc['n_pairs']} pairs of "
              f"labels): {rc['agreement']:.3f} of the pairs agree, mean |difference| {rc['mean_abs_diff']:.3f}")
    rep = audit(pairs)
    print(f"{data_path}: {kind}, {len(items)} rows ({len(skipped)} skipped) -> {rep['n_labels']} pairwise labels "
          f"over {len({p for p, _, _ in pairs})} prompts")
    print(f"contradictions (a pair labelled both ways): {rep['contradictions']}; prompts with an intransitive "
          f"cycle: {rep['prompts_with_cycles']}")
    for p, cyc in rep["examples"]:
        print(f"  cycle in {p!r}: " + " > ".join(repr(t[:40]) for t in cyc) + f" > {cyc[0][:40]!r}")
    if rep["exact"]:
        print(f"min labels to reverse for any scalar reward: {rep['min_reversals']}; so no reward model can agree "
              f"with more than {rep['max_agreement']:.4f} of these labels")
    else:
        print(f"labels to reverse for a scalar reward (greedy, a component has over 12 responses): at most "
              f"{rep['min_reversals']}; an ordering agreeing with {rep['max_agreement']:.4f} of the labels exists")
    if reward_path:
        rm, rm_vocab, gain, bias = common.load_reward_model(reward_path, None, common.setup(device).device, False)
        tok = data.Tokenizer(rm_vocab)
        ids = lambda p, t: (tok.encode(p, "prompt") + tok.encode(t, "response"))[-rm.config.block_size:]
        with torch.no_grad():
            a = score_sequences(rm, [ids(p, c) for p, c, _ in pairs], tok.eot)
            b = score_sequences(rm, [ids(p, r) for p, _, r in pairs], tok.eot)
        print(f"{reward_path} agrees with {(a > b).float().mean().item():.4f} of them")
