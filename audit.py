"""
audit.py (goldRLHF): how far to trust feedback, and the best accuracy any reward model can reach on it.
Agreement between labelers (Cohen's and Fleiss' kappa, Krippendorff's alpha), Dawid-Skene's model of each
labeler, the consistency of repeated ratings, and the preference audit: a scalar reward orders responses,
so on labels with cycles (a > b > c > a) it must contradict some; the fewest it must (the minimum feedback
arc set) bound its accuracy. For any feedback file (feedback.py reports the same for the files it writes):

    python audit.py --data_path=out/feedback/pairwise_train.jsonl [--reward_path=out/reward]
"""
import json
import math
from itertools import combinations

import torch

import common
import feedback_data
import rewards
from configurator import UserError, configure
from model import score_sequences

data_path = ""  # a feedback file of any kind (pairwise, ties, rankings, likert, binary) to audit
reward_path = ""  # optional: a reward model (reward.py) whose agreement with the same labels is printed beside the bound
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', ...
json_line = False  # also print the numbers as one JSON object on the last line (for scripts: experiments/audit.sh)


# ----------------------------------------------------------------------------- agreement and labeler models
def cohen_kappa(a, b):
    """Cohen's kappa (1960) of two labelers on the same items: (p_o - p_e) / (1 - p_e), p_e: chance."""
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(table):
    """Fleiss' kappa (1971): table[i][j] = how many of the n raters (n per item) put item i in category j."""
    N, n = len(table), sum(table[0])
    p = [sum(row[j] for row in table) / (N * n) for j in range(len(table[0]))]
    P = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in table) / N
    P_e = sum(q * q for q in p)
    return 1.0 if P_e == 1 else (P - P_e) / (1 - P_e)


def krippendorff_alpha(units, metric="nominal"):
    """Krippendorff's alpha (2011, "Computing Krippendorff's alpha-reliability"), 1 - D_o / D_e: units are
    the values given each item (fewer than 2: ignored); metric 'nominal' or 'interval' ((c - k)^2)."""
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
    """Dawid & Skene (1979): EM from the soft majority vote for each labeler's confusion matrix [true][given]
    and the items' classes, from (item, labeler, class 0..K-1) triples. Returns (posterior {item: [K]},
    confusion {labeler: K x K}, prior [K]); smoothing: pseudo-counts, so no cell is exactly 0."""
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


def spearman(x, y):
    """Spearman rank correlation: Pearson correlation of the ranks, ties get their average rank."""
    def ranks(v):
        order, out, i = sorted(range(len(v)), key=v.__getitem__), [0.0] * len(v), 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in rx)), math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx > 0 and sy > 0 else 0.0


def repeat_consistency(rows):
    """The tutorials' "quality checks" over every pair of labels of one item, rows (item, score or bool):
    agreement (the share equal), mean_abs_diff (nan without pairs), n_repeated items, n_pairs."""
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
    """(fewest labels any ordering of `nodes` contradicts, that ordering best first), w[(a, b)] counting a
    preferred to b: the minimum feedback arc set, exact by dynamic programming over subsets for n <= 12
    (2^n n^2), else Eades, Lin & Smyth's (1993) greedy ordering, an upper bound."""
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
    """Up to `limit` shortest cycles of the majority graph (a -> b: a preferred to b more often than the
    reverse), each a list of nodes starting at its smallest."""
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
    """The label graph's weakly connected components: each can be solved alone."""
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
    """The preference audit of (prompt, preferred, other) labels: a scalar reward contradicts at least the
    minimum feedback arc set of each prompt's label graph. Returns a dict: n_labels, min_reversals, exact
    (else min_reversals is a greedy upper bound), max_agreement = 1 - min_reversals / n_labels (the best
    accuracy any reward model can reach), contradictions, prompts_with_cycles, examples (up to 3 cycles)."""
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
    configure(globals())
    if not data_path:
        raise UserError("nothing to audit", fix="pass --data_path=feedback.jsonl (pairwise, ties, rankings, likert or binary)")
    kind = feedback_data.detect_kind(data_path)
    items, skipped = feedback_data.load_feedback(data_path, kind)
    pairs = feedback_data.to_pairs(items, kind)
    if kind in ("likert", "binary"):  # the same response to the same prompt, labelled more than once
        rc = repeat_consistency([((it["prompt"], it["texts"][0]), it["y"]) for it in items])
        print(f"repeated items: {rc['n_repeated']} responses labelled more than once ({rc['n_pairs']} pairs of "
              f"labels): {rc['agreement']:.3f} of the pairs agree, mean |difference| {rc['mean_abs_diff']:.3f}")
    rep = audit(pairs)
    n_prompts = len({p for p, _, _ in pairs})
    print(f"{data_path}: {kind}, {len(items)} rows ({len(skipped)} skipped) -> {rep['n_labels']} pairwise labels "
          f"over {n_prompts} prompts")
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
        rm = rewards.load_reward_model(reward_path, None, common.setup(device).device, False)
        tok = rm.tok
        ids = lambda p, t: (tok.encode(p, "prompt") + tok.encode(t, "response"))[-rm.model.config.block_size:]
        with torch.no_grad():
            a = score_sequences(rm.model, [ids(p, c) for p, c, _ in pairs], tok.eot)
            b = score_sequences(rm.model, [ids(p, r) for p, _, r in pairs], tok.eot)
        rep["reward_agreement"] = (a > b).float().mean().item()
        print(f"{reward_path} agrees with {rep['reward_agreement']:.4f} of them")
    if json_line:
        keys = ("n_labels", "min_reversals", "exact", "max_agreement", "contradictions", "prompts_with_cycles", "reward_agreement")
        print(json.dumps(dict(kind=kind, rows=len(items), skipped=len(skipped), prompts=n_prompts,
                              **{k: rep[k] for k in keys if k in rep})))
