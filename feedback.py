"""
feedback.py (goldRLHF): human feedback, simulated or read: the labelers, their aggregation, the feedback
files (format and checks), and the collection loop that reward.py runs on the built-in task.

The built-in task has no people, so the labelers here play them (Ziegler et al. 2019; Ouyang et al.
2022 sample K responses per prompt from the SFT model and ask people to compare them): each takes the
hidden gold scores (task.gold) of the K responses to one prompt and answers as a noisy person would,
with Bradley-Terry noise (label_pair), "about equal" when close (label_tie), a 1-5 rating
(label_likert) or a Plackett-Luce ranking (label_ranking). `n_annotators` of them label every item and
the majority vote (Borda count for rankings, the median rating for Likert) is kept; `collect` reports
how often they agree. Every kind is written from the same responses, one JSON object per line:

    pairwise  {"prompt": str, "chosen": str, "rejected": str, "margin": float}   (TRL's names; margin
              optional: here the vote margin |for - against| / n_annotators, in [0, 1])
    ties      {"prompt": str, "chosen": str, "rejected": str, "tie": bool}       (tie: "about equal",
              then the order of chosen/rejected means nothing)
    rankings  {"prompt": str, "ranking": [best, ..., worst]}                     (2 or more responses)
    likert    {"prompt": str, "completion": str, "score": int 1..5}
    binary    {"prompt": str, "completion": str, "label": bool}                  (thumbs up / down: TRL's
              unpaired format; a person accepts when their noisy view of gold clears task.ACCEPT_THRESHOLD)

Responses are the text after the prompt and end with "<|endoftext|>" when the writer stopped. Real
human feedback in the same formats (or any of data.py's, README: Dataset formats) is read by
load_feedback, with every error naming file and line.

The labelers can be a mixed pool (make_pool: careful, noisy, length-biased, adversarial people) and the
pairwise votes aggregated by majority or by Dawid-Skene (audit.py holds the agreement statistics, the
labeler model and the preference audit).
"""
import math
import os
import random
import time
from itertools import combinations

import torch

import data
import task
from audit import dawid_skene, fleiss_kappa, krippendorff_alpha
from configurator import UserError

KINDS = ("pairwise", "ties", "rankings", "likert")  # from one labelling of each group
ALL_KINDS = KINDS + ("binary",)  # binary: thumbs up / down on single responses, from a second labelling

# ----------------------------------------------------------------------------- simulated labelers
# Simulated human labelers (Ouyang et al. 2022 and Ziegler et al. 2019 sample K responses per prompt
# from the SFT model and ask people to compare them; here the gold scorer plus noise plays the people).
# Each labeler takes the gold scores of K responses to one prompt and returns what a noisy person says.

def label_pair(g_a, g_b, rng, temperature=0.25):
    """Bradley-Terry noise: P(a preferred) = sigmoid((g_a - g_b) / temperature). Returns True if a wins."""
    return rng.random() < 1 / (1 + math.exp(-(g_a - g_b) / temperature))

def label_tie(g_a, g_b, rng, temperature=0.25, tie_margin=0.15):
    """Like label_pair, but 'about equal' (None) when the gold scores are within tie_margin."""
    return None if abs(g_a - g_b) < tie_margin else label_pair(g_a, g_b, rng, temperature)

def label_likert(g, rng, noise=0.3):
    """A 1-5 rating: the gold score (about [-1, 1]) mapped to [1, 5], plus Gaussian noise, rounded."""
    return int(min(5, max(1, round(3 + 2 * (g + rng.gauss(0, noise))))))

def label_binary(g, rng, threshold=task.ACCEPT_THRESHOLD, noise=task.ACCEPT_NOISE):
    """Thumbs up (True) when the gold score plus Gaussian noise clears the threshold (task.accept_probability)."""
    return g + rng.gauss(0, noise) > threshold


def label_ranking(golds, rng, temperature=0.25):
    """A full ranking of K (best first) drawn from Plackett-Luce with utilities gold / temperature."""
    left, order = list(range(len(golds))), []
    while left:
        w = [math.exp(golds[i] / temperature) for i in left]
        i = rng.choices(left, weights=w)[0]
        order.append(i)
        left.remove(i)
    return order



# A pool of people who are not all alike (the tutorials' "noisy and inconsistent" annotators): each
# judges a pair from the gold scores in its own way. Only pairwise labels come from the pool; ties,
# rankings and Likert ratings are given by careful labelers.
LABELER_TYPES = ("careful", "noisy", "length", "adversarial")
NOISY = 4.0  # a noisy labeler's Bradley-Terry temperature, in units of the careful one's
LENGTH_BONUS = 0.1  # a length-biased labeler's utility: gold + this per word (prefers the longer response)


def make_pool(spec, n_people):
    """'careful:0.6,noisy:0.2,adversarial:0.2' -> the types of n_people labelers in those shares (largest
    remainders). careful: Bradley-Terry noise on the gold scores; noisy: the same at NOISY x the
    temperature; length: careful on gold + LENGTH_BONUS per word; adversarial: careful, then the opposite."""
    shares = {}
    for entry in [e.strip() for e in spec.split(",") if e.strip()]:
        name, _, w = entry.partition(":")
        if name not in LABELER_TYPES:
            raise UserError(f"--labelers: unknown labeler type {name!r}", fix=f"use {', '.join(LABELER_TYPES)}")
        try:
            shares[name] = float(w or 1.0)
        except ValueError:
            raise UserError(f"--labelers: share {w!r} of {name} is not a number") from None
    if not shares or any(w < 0 for w in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
        raise UserError(f"--labelers={spec!r}: the shares must be >= 0 and sum to 1 (they sum to "
                        f"{sum(shares.values()):g})", fix="e.g. --labelers=careful:0.6,noisy:0.2,adversarial:0.2")
    counts = {k: int(w * n_people) for k, w in shares.items()}
    for k in sorted(shares, key=lambda k: shares[k] * n_people - counts[k], reverse=True)[:n_people - sum(counts.values())]:
        counts[k] += 1
    return [k for k in LABELER_TYPES for _ in range(counts.get(k, 0))]


def judge(kind, g_a, g_b, words_a, words_b, rng, temperature=0.25):
    """One labeler of type `kind` compares responses a and b (gold scores, lengths in words): True if a wins."""
    if kind == "noisy":
        return label_pair(g_a, g_b, rng, NOISY * temperature)
    if kind == "length":
        return label_pair(g_a + LENGTH_BONUS * words_a, g_b + LENGTH_BONUS * words_b, rng, temperature)
    vote = label_pair(g_a, g_b, rng, temperature)
    return not vote if kind == "adversarial" else vote

def agreement(votes):
    """(agreeing, total) pairs of annotators that gave the same label."""
    n = len(votes)
    return sum(a == b for a, b in combinations(votes, 2)), n * (n - 1) // 2


def label_group(prompt, responses, rng, n_annotators=3, temp=0.25, tie_margin=0.15, noise=0.3, pool=None):
    """Play `n_annotators` people labelling K responses to one prompt with every kind of feedback.
    Returns ({kind: rows}, {kind: [agreeing, total annotator pairs]}); rows are in the file formats.
    pool: the labeler types (make_pool) the pairwise judges come from, n_annotators of them drawn at
    random per pair (all of them, in order, when the pool has n_annotators people; default: that many
    careful ones). Pairwise rows also keep, in fields the files leave out, the votes (person, a wins), the
    first response a and both gold scores (for Dawid-Skene and the report)."""
    uniq = list(dict.fromkeys(responses))  # identical responses can't be compared
    g = [task.gold(prompt, r) for r in uniq]
    words = [len(r.replace(data.EOT_TEXT, "").split()) for r in uniq]
    pool = pool or ["careful"] * n_annotators
    rows, agree = {k: [] for k in KINDS}, {k: [0, 0] for k in KINDS}

    def tally(kind, votes):
        a, n = agreement(votes)
        agree[kind][0] += a
        agree[kind][1] += n

    for i, j in combinations(range(len(uniq)), 2):
        who = list(range(n_annotators)) if len(pool) == n_annotators else rng.sample(range(len(pool)), n_annotators)
        votes = [judge(pool[w], g[i], g[j], words[i], words[j], rng, temp) for w in who]
        tally("pairwise", votes)
        a_wins = 2 * sum(votes) > n_annotators or (2 * sum(votes) == n_annotators and rng.random() < 0.5)
        c, r = (uniq[i], uniq[j]) if a_wins else (uniq[j], uniq[i])
        rows["pairwise"].append(dict(prompt=prompt, chosen=c, rejected=r,
                                     margin=round(abs(2 * sum(votes) - n_annotators) / n_annotators, 4),
                                     _votes=list(zip(who, votes)), _a=uniq[i], _b=uniq[j], _gold=(g[i], g[j])))
        votes = [label_tie(g[i], g[j], rng, temp, tie_margin) for _ in range(n_annotators)]
        tally("ties", votes)
        counts = {v: votes.count(v) for v in (True, False, None)}
        top = max(counts.values())
        winner = None if counts[None] == top or counts[True] == counts[False] == top else counts[True] == top
        c, r = (uniq[j], uniq[i]) if winner is False else (uniq[i], uniq[j])
        rows["ties"].append(dict(prompt=prompt, chosen=c, rejected=r, tie=winner is None))
    if len(uniq) >= 2:  # rankings: Borda count (mean position) over the annotators
        orders = [label_ranking(g, rng, temp) for _ in range(n_annotators)]
        for i, j in combinations(range(len(uniq)), 2):
            tally("rankings", [o.index(i) < o.index(j) for o in orders])
        pos = [sum(o.index(i) for o in orders) + rng.random() * 1e-3 for i in range(len(uniq))]
        rows["rankings"].append(dict(prompt=prompt, ranking=[uniq[i] for i in sorted(range(len(uniq)), key=pos.__getitem__)]))
    for i, resp in enumerate(uniq):  # Likert: the median rating
        votes = sorted(label_likert(g[i], rng, noise) for _ in range(n_annotators))
        tally("likert", votes)
        rows["likert"].append(dict(prompt=prompt, completion=resp, score=votes[n_annotators // 2]))
    return rows, agree



def collect(policy, tok, fb_dir, seed, n_samples, n_rounds, n_annotators, label_temperature, tie_margin,
            likert_noise, max_new_tokens, temperature, ctx, pool=None, aggregate="majority"):
    """The built-in task's feedback: for every train prompt n_rounds groups of n_samples responses
    sampled from the policy (test prompts: half as many rounds, at least 1), labelled with every kind
    by n_annotators simulated people (pairwise ones drawn from `pool`); writes
    fb_dir/{kind}_{train,test}.jsonl. aggregate: how the pairwise votes become a label, 'majority' or
    'dawid_skene' (the item's posterior under every labeler's learned confusion; margin |2P - 1|).
    Returns the train split's report (a metrics dict): counts, agreement per kind, Fleiss' kappa and
    Krippendorff's alpha of the pairwise votes, and with a mixed pool each labeler type's true
    reliability (votes agreeing with gold) beside Dawid-Skene's estimate."""
    # binary labels have their own generator, so the other kinds' labels do not depend on them
    t0, lab_rng, bin_rng, report = time.time(), random.Random(seed), random.Random(seed + 1), {}
    for split, rounds in (("train", n_rounds), ("test", max(1, n_rounds // 2))):
        prompts = [p for p in task.prompts(split) for _ in range(rounds * n_samples)]
        with torch.no_grad(), ctx:
            texts, _, _ = data.sample_responses(policy, tok, prompts, max_new_tokens, temperature, batch_size=256)
        rows, agree = {k: [] for k in ALL_KINDS}, {k: [0, 0] for k in ALL_KINDS}
        for g in range(0, len(prompts), n_samples):
            r, a = label_group(prompts[g], texts[g:g + n_samples], lab_rng, n_annotators,
                               label_temperature, tie_margin, likert_noise, pool)
            r["binary"], a["binary"] = label_binary_group(prompts[g], texts[g:g + n_samples], bin_rng, n_annotators)
            for k in ALL_KINDS:
                rows[k] += r[k]
                agree[k] = [agree[k][0] + a[k][0], agree[k][1] + a[k][1]]
        pairs = rows["pairwise"]
        mixed = pool is not None and len(set(pool)) > 1
        if aggregate == "dawid_skene" or mixed:
            post, conf, prior = dawid_skene([(n, w, int(v)) for n, row in enumerate(pairs) for w, v in row["_votes"]], 2)
        if aggregate == "dawid_skene":
            for n, row in enumerate(pairs):
                p_a = post[n][1]
                if p_a != 0.5:  # (exactly 0.5: the majority's coin stands)
                    row["chosen"], row["rejected"] = (row["_a"], row["_b"]) if p_a > 0.5 else (row["_b"], row["_a"])
                row["margin"] = round(abs(2 * p_a - 1), 4)
        for k in ALL_KINDS:
            data.write_jsonl(os.path.join(fb_dir, f"{k}_{split}.jsonl"), rows[k])
        if split == "train":
            votes = [[int(v) for _, v in row["_votes"]] for row in pairs]
            report = {"feedback_s": time.time() - t0, "n_responses": len(texts),
                      **{f"n_{k}": len(rows[k]) for k in ALL_KINDS},
                      "accept_share": sum(r["label"] for r in rows["binary"]) / max(1, len(rows["binary"])),
                      **{f"agreement/{k}": a / max(1, n) for k, (a, n) in agree.items()}}
            if n_annotators > 1:  # (one vote per item has no agreement to measure)
                report["agreement/fleiss_kappa"] = fleiss_kappa([[len(v) - sum(v), sum(v)] for v in votes])
                report["agreement/krippendorff_alpha"] = krippendorff_alpha(votes)
            for kind in sorted(set(pool)) if mixed else []:  # true vs estimated reliability, per type
                people = [w for w, t in enumerate(pool) if t == kind]
                right = [v == (row["_gold"][0] > row["_gold"][1]) for row in pairs if row["_gold"][0] != row["_gold"][1]
                         for w, v in row["_votes"] if pool[w] == kind]
                est = [sum(prior[c] * conf[w][c][c] for c in range(2)) for w in people if w in conf]
                report[f"reliability/{kind}"] = sum(right) / max(1, len(right))
                report[f"reliability/{kind}_dawid_skene"] = sum(est) / max(1, len(est))
    return report


def label_binary_group(prompt, responses, rng, n_annotators=3):
    """Thumbs up / down on each distinct response, the majority of n_annotators (a tie: a coin). Returns
    (rows, [agreeing, total annotator pairs])."""
    rows, agree = [], [0, 0]
    for r in dict.fromkeys(responses):
        votes = [label_binary(task.gold(prompt, r), rng) for _ in range(n_annotators)]
        a, n = agreement(votes)
        agree = [agree[0] + a, agree[1] + n]
        up = 2 * sum(votes) > n_annotators or (2 * sum(votes) == n_annotators and rng.random() < 0.5)
        rows.append(dict(prompt=prompt, completion=r, label=up))
    return rows, agree


# ----------------------------------------------------------------------------- reading feedback
def load_feedback(path, kind):
    """Read and check one feedback file. Returns (items, skipped): items are dicts with prompt, texts
    (responses, best first for pairs and rankings) and y (margin, tie flag or score). Pairs and rankings
    come in any of data.py's formats (README: Dataset formats). Malformed rows (missing field, wrong
    type, score out of 1..5) raise an error naming file and line; rows that carry no comparison
    (identical chosen and rejected, a ranking with duplicates) are skipped and counted."""
    if kind == "pairwise":
        rows = [dict(prompt=r["prompt"], texts=[r["chosen"], r["rejected"]], y=r.get("margin"), where=r["where"])
                for r in data.load_preferences(path)]
    elif kind == "rankings":
        rows = [dict(prompt=r["prompt"], texts=r["ranking"], y=None, where=r["where"]) for r in data.load_rankings(path)]
    elif kind == "binary":
        rows = [dict(prompt=r["prompt"], texts=[r["completion"]], y=r["label"], where=r["where"])
                for r in data.load_unpaired(path)]
    else:
        need = dict(ties=("prompt|chosen|rejected|tie",), likert=("prompt|completion|score",))[kind]
        rows = []
        for row in data.read_jsonl(path, required=need):
            w = row["_where"]
            texts = [row["chosen"], row["rejected"]] if kind == "ties" else [row["completion"]]
            if not all(isinstance(t, str) and t for t in [row["prompt"], *texts]):
                raise UserError("prompt and responses must be non-empty strings", w)
            y = row["tie"] if kind == "ties" else row["score"]
            if kind == "ties" and not isinstance(y, bool):
                raise UserError(f"tie must be true or false, got {y!r}", w)
            if kind == "likert" and (isinstance(y, bool) or not isinstance(y, int) or not 1 <= y <= 5):
                raise UserError(f"score must be an integer 1..5, got {y!r}", w)
            rows.append(dict(prompt=row["prompt"], texts=texts, y=y, where=w))
    items, skipped = [], []
    for it in rows:
        if len(set(it["texts"])) < len(it["texts"]):
            skipped.append(f"{it['where']}: identical responses")
            continue
        items.append(it)
    if not items:
        raise UserError(f"no usable rows ({len(skipped)} skipped, e.g. {skipped[:1]})", path)
    return items, skipped


def detect_kind(path):
    """The kind of a feedback file, from the fields of its first row."""
    row = data.read_jsonl(path)[0]
    for kind, field in (("rankings", "ranking"), ("likert", "score"), ("ties", "tie"), ("binary", "label"),
                        ("pairwise", "chosen")):
        if field in row:
            return kind
    raise UserError("not a feedback row (expected chosen/rejected, tie, ranking, score or label)", row["_where"])


def to_pairs(items, kind):
    """Feedback of any kind -> (prompt, better, worse) pairs: a ranking gives all its pairs, a tie none,
    Likert ratings (or thumbs) of the same prompt give every pair with different scores (up over down)."""
    if kind in ("pairwise", "ties"):
        return [(it["prompt"], *it["texts"]) for it in items if not (kind == "ties" and it["y"])]
    if kind == "rankings":
        return [(it["prompt"], it["texts"][i], it["texts"][j]) for it in items
                for i, j in combinations(range(len(it["texts"])), 2)]
    by_prompt = {}
    for it in items:
        by_prompt.setdefault(it["prompt"], []).append((it["y"], it["texts"][0]))
    return [(p, a[1], b[1]) for p, rs in by_prompt.items() for a, b in combinations(sorted(rs, reverse=True), 2)
            if a[0] > b[0]]
