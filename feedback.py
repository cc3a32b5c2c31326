"""
feedback.py (goldRLHF): collect human feedback, the stage between SFT and the reward model (Ouyang et al.
2022, step 2's data; Ziegler et al. 2019; Stiennon et al. 2020): sample K responses per prompt from a
policy, have people judge them, aggregate their votes, audit the result, and write the feedback files
that reward.py and dpo.py read.

    python feedback.py                                   # the SFT model's samples, 3 careful people per item
    python feedback.py --labelers=careful:0.6,noisy:0.1,length:0.1,adversarial:0.2 --n_labelers=10 \
                       --aggregate=dawid_skene           # a mixed pool, votes aggregated by Dawid-Skene
    python feedback.py --policy_path=out/ppo             # label what a later policy writes
    python feedback.py --policy_path=out/ppo --anchor_path=out/sft/ckpt.pt   # ... compared with the SFT model's

The built-in task has no people, so the labelers here play them: each takes the hidden gold scores
(task.gold) of the K responses to one prompt and answers as a noisy person would, with Bradley-Terry
noise (label_pair), "about equal" when close (label_tie), a 1-5 rating (label_likert), a
Plackett-Luce ranking (label_ranking) or a thumbs up / down (label_binary). `n_annotators` of them label
every item; the majority vote is kept (Borda count for rankings, the median rating for Likert), or for
pairs `--aggregate=dawid_skene`. Every kind is written from the same responses to
out_dir/{kind}_{train,test}.jsonl, one JSON object per line:

    pairwise  {"prompt": str, "chosen": str, "rejected": str, "margin": float}   (TRL's names; margin
              optional: here the vote margin |for - against| / n_annotators, in [0, 1])
    ties      {"prompt": str, "chosen": str, "rejected": str, "tie": bool}       (tie: "about equal",
              then the order of chosen/rejected means nothing)
    rankings  {"prompt": str, "ranking": [best, ..., worst]}                     (2 or more responses)
    likert    {"prompt": str, "completion": str, "score": int 1..5}
    aspects   {"prompt": str, "completion": str, "scores": {aspect: int 1..5}}      (one rating per aspect of
              task.ASPECTS: opinion, recommendation, fluency, brevity: they sum to gold; reward.py --aspect=NAME)
    binary    {"prompt": str, "completion": str, "label": bool}                  (thumbs up / down: TRL's
              unpaired format; a person accepts when their noisy view of gold clears task.ACCEPT_THRESHOLD)

Responses are the text after the prompt and end with "<|endoftext|>" when the writer stopped. The report
(printed, and out_dir/metrics.jsonl): counts; how often the annotators agree (raw, Fleiss' kappa,
Krippendorff's alpha); how often the kept labels agree with gold; with a mixed pool each labeler type's
true reliability beside Dawid-Skene's estimate; the preference audit (audit.py: intransitive cycles, the
best accuracy any scalar reward can reach on these labels); and how consistent the labels of responses
that were sampled, and labelled, more than once are. Real human feedback in the same formats (or any of
data.py's, README: Dataset formats) is read by load_feedback, every error naming file and line; audit it
with `python audit.py --data_path=FILE`. One process: sampling a few thousand short responses takes
seconds (under torchrun, use python).
"""
import json
import math
import os
import random
import time
from itertools import combinations

import torch

import common
import data
import task
from audit import audit, dawid_skene, fleiss_kappa, krippendorff_alpha, repeat_consistency
from common import log_metrics
from configurator import UserError, configure

# ----------------------------------------------------------------------------- config
out_dir = "out/feedback"  # the feedback files and metrics.jsonl go here (reward.py's and dpo.py's data)
policy_path = "out/sft/ckpt.pt"  # the policy whose samples people label (the SFT model; any checkpoint)
anchor_path = ""  # a second policy (e.g. the SFT model) writing the second half of each group: its samples are compared with the policy's
n_samples = 4  # K responses per prompt (InstructGPT: K = 4..9); each group is labelled with every kind
n_rounds = 4  # groups of K per train prompt (test prompts get half as many, at least 1)
n_annotators = 3  # simulated people per item; the label is their majority vote (or --aggregate's)
labelers = "careful:1.0"  # the pool's labeler types and shares: careful, noisy, length (prefers longer), adversarial (flips)
n_labelers = 3  # people in the pool: each pair is judged by n_annotators of them at random (all of them, if equal)
aggregate = "majority"  # pairwise votes -> label: 'majority' or 'dawid_skene' (EM over every labeler's confusion)
label_temperature = 0.25  # Bradley-Terry / Plackett-Luce noise of the labelers (gold-score units)
tie_margin = 0.15  # labelers say "about equal" when gold scores are closer than this
likert_noise = 0.3  # std of the labelers' Gaussian noise on the gold score before rating 1-5
max_new_tokens = 40  # response length limit when sampling
temperature = 1.0  # sampling temperature of the policy
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (sampling and the labelers)

KINDS = ("pairwise", "ties", "rankings", "likert")  # from one labelling of each group
ALL_KINDS = KINDS + ("binary", "aspects")  # thumbs up / down and per-aspect ratings: a second and a third labelling

# ----------------------------------------------------------------------------- simulated labelers
# Simulated human labelers (Ouyang et al. 2022 and Ziegler et al. 2019 sample K responses per prompt
# from the SFT model and ask people to compare them; here the gold scorer plus noise plays the people).
# Each labeler takes the gold scores of K responses to one prompt and returns what a noisy person says.

def label_pair(g_a, g_b, rng, temperature=0.25):
    """Bradley-Terry noise: P(a preferred) = sigmoid((g_a - g_b) / temperature). Returns True if a wins."""
    return rng.random() < 1 / (1 + math.exp(min(700.0, -(g_a - g_b) / temperature)))  # (no overflow at tiny temperatures)

def label_tie(g_a, g_b, rng, temperature=0.25, tie_margin=0.15):
    """Like label_pair, but 'about equal' (None) when the gold scores are within tie_margin."""
    return None if abs(g_a - g_b) < tie_margin else label_pair(g_a, g_b, rng, temperature)

def label_likert(g, rng, noise=0.3):
    """A 1-5 rating: the gold score (about [-1, 1]) mapped to [1, 5], plus Gaussian noise, rounded."""
    return int(min(5, max(1, round(3 + 2 * (g + rng.gauss(0, noise))))))

def label_aspect(v, aspect, rng, noise=0.3):
    """A 1-5 rating of one aspect (task.ASPECTS): its value mapped linearly from [worst, best] to [1, 5],
    with Gaussian noise of std `noise` x half that range (for opinion, exactly label_likert), rounded."""
    lo, hi = task.ASPECTS[aspect]
    return int(min(5, max(1, round(1 + 4 * (v + rng.gauss(0, noise) * (hi - lo) / 2 - lo) / (hi - lo)))))

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
            likert_noise, max_new_tokens, temperature, ctx, pool=None, aggregate="majority", anchor=None):
    """The built-in task's feedback: for every train prompt n_rounds groups of n_samples responses
    sampled from the policy (test prompts: half as many rounds, at least 1), labelled with every kind
    by n_annotators simulated people (pairwise ones drawn from `pool`); writes
    fb_dir/{kind}_{train,test}.jsonl. aggregate: how the pairwise votes become a label, 'majority' or
    'dawid_skene' (the item's posterior under every labeler's learned confusion; margin |2P - 1|).
    Returns the report (a metrics dict): for the train split counts, agreement per kind, Fleiss' kappa
    and Krippendorff's alpha of the pairwise votes, and with a mixed pool each labeler type's true
    reliability (votes agreeing with gold) beside Dawid-Skene's estimate; for both splits how often the
    kept pairwise labels agree with gold ({split}/labels_acc_gold). anchor: a second model that writes the
    last n_samples // 2 responses of every group, so people compare the policy's samples with its (when
    every sample of a collapsed policy is equally bad, comparisons among them alone are coin flips)."""
    # binary and aspect labels have their own generators, so the other kinds' labels do not depend on them
    t0, lab_rng, bin_rng, asp_rng = time.time(), random.Random(seed), random.Random(seed + 1), random.Random(seed + 2)
    report = {}
    for split, rounds in (("train", n_rounds), ("test", max(1, n_rounds // 2))):
        prompts = [p for p in task.prompts(split) for _ in range(rounds * n_samples)]
        with torch.no_grad(), ctx:
            texts, _, _ = data.sample_responses(policy, tok, prompts, max_new_tokens, temperature, batch_size=256)
            if anchor is not None:
                other, _, _ = data.sample_responses(anchor, tok, prompts, max_new_tokens, temperature, batch_size=256)
                texts = mix_groups(texts, other, n_samples)
        rows, agree = {k: [] for k in ALL_KINDS}, {k: [0, 0] for k in ALL_KINDS}
        for g in range(0, len(prompts), n_samples):
            r, a = label_group(prompts[g], texts[g:g + n_samples], lab_rng, n_annotators,
                               label_temperature, tie_margin, likert_noise, pool)
            r["binary"], a["binary"] = label_binary_group(prompts[g], texts[g:g + n_samples], bin_rng, n_annotators)
            r["aspects"], a["aspects"] = label_aspect_group(prompts[g], texts[g:g + n_samples], asp_rng, n_annotators,
                                                            likert_noise)
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
        right = [(a > b) == (row["chosen"] == row["_a"]) for row in pairs for a, b in [row["_gold"]] if a != b]
        report[f"{split}/labels_acc_gold"] = sum(right) / max(1, len(right))  # the kept labels against gold
        if split == "train":
            votes = [[int(v) for _, v in row["_votes"]] for row in pairs]
            report = {**report, "feedback_s": time.time() - t0, "n_responses": len(texts),
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


def mix_groups(texts, other, n_samples):
    """Groups of n_samples responses (texts: consecutive groups) whose last n_samples // 2 come from
    `other` (the anchor model's samples for the same prompts, aligned with texts)."""
    return [o if i % n_samples >= n_samples - n_samples // 2 else t for i, (t, o) in enumerate(zip(texts, other))]


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


def label_aspect_group(prompt, responses, rng, n_annotators=3, noise=0.3):
    """Every aspect of each distinct response rated 1-5 by n_annotators people, the median kept. Returns
    (rows, [agreeing, total annotator pairs] over all aspects)."""
    rows, agree = [], [0, 0]
    for r in dict.fromkeys(responses):
        scores = {}
        for name, v in task.aspects(prompt, r).items():
            votes = sorted(label_aspect(v, name, rng, noise) for _ in range(n_annotators))
            a, n = agreement(votes)
            agree = [agree[0] + a, agree[1] + n]
            scores[name] = votes[n_annotators // 2]
        rows.append(dict(prompt=prompt, completion=r, scores=scores))
    return rows, agree


# ----------------------------------------------------------------------------- reading feedback
def load_feedback(path, kind, aspect=None):
    """Read and check one feedback file. Returns (items, skipped): items are dicts with prompt, texts
    (responses, best first for pairs and rankings) and y (margin, tie flag, score, or for aspects the
    {aspect: score} dict, or with `aspect` given that aspect's score, which every row must have). Pairs and rankings
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
        need = dict(ties=("prompt|chosen|rejected|tie",), likert=("prompt|completion|score",),
                    aspects=("prompt|completion|scores",))[kind]
        rows = []
        for row in data.read_jsonl(path, required=need):
            w = row["_where"]
            texts = [row["chosen"], row["rejected"]] if kind == "ties" else [row["completion"]]
            if not all(isinstance(t, str) and t for t in [row["prompt"], *texts]):
                raise UserError("prompt and responses must be non-empty strings", w)
            y = row["tie"] if kind == "ties" else row["scores"] if kind == "aspects" else row["score"]
            if kind == "aspects":
                if not isinstance(y, dict) or not y or not all(isinstance(k, str) for k in y):
                    raise UserError(f"scores must be an object {{aspect: 1..5}}, got {y!r}", w)
                if aspect is not None and aspect not in y:
                    raise UserError(f"no rating of aspect {aspect!r} (this row rates {', '.join(y)})", w,
                                    "pass --aspect= one of those")
                bad = [v for v in y.values() if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5]
                if bad:
                    raise UserError(f"scores must be integers 1..5, got {bad[0]!r}", w)
                y = y if aspect is None else y[aspect]
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
    for kind, field in (("rankings", "ranking"), ("likert", "score"), ("aspects", "scores"), ("ties", "tie"), ("binary", "label"),
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
    for it in items:  # (per-aspect ratings, all aspects: their sum, as gold is)
        y = sum(it["y"].values()) if isinstance(it["y"], dict) else it["y"]
        by_prompt.setdefault(it["prompt"], []).append((y, it["texts"][0]))
    return [(p, a[1], b[1]) for p, rs in by_prompt.items() for a, b in combinations(sorted(rs, reverse=True), 2)
            if a[0] > b[0]]


# ----------------------------------------------------------------------------- the stage
if __name__ == "__main__":
    config = configure(globals(), choices=dict(aggregate=("majority", "dawid_skene")))
    pool = make_pool(labelers, n_labelers)
    if n_annotators > n_labelers:
        raise UserError(f"--n_annotators={n_annotators} is more than the pool's --n_labelers={n_labelers}",
                        fix="each item needs that many different people: raise --n_labelers")
    if n_samples < 2:
        raise UserError(f"--n_samples={n_samples}: comparisons need at least 2 responses per prompt")
    if "RANK" in os.environ:
        raise UserError("feedback.py runs in one process (sampling takes seconds)", fix="run it with python, not torchrun")
    rt = common.setup(device, dtype, seed, out_dir)
    policy, vocab, _ = common.load_model(policy_path)
    policy.to(rt.device).eval()
    tok = data.Tokenizer(vocab)
    anchor = common.load_frozen(anchor_path, vocab, "anchor", rt.device)[0] if anchor_path else None
    print(f"sampling {n_samples} responses per prompt, {n_rounds} rounds, from {policy_path}"
          f"{f' (the last {n_samples // 2} of each group from {anchor_path})' if anchor_path else ''}; "
          f"{n_annotators} of {n_labelers} people ({labelers}) per item, {aggregate}")
    report = collect(policy, tok, out_dir, seed, n_samples, n_rounds, n_annotators, label_temperature, tie_margin,
                     likert_noise, max_new_tokens, temperature, rt.ctx, pool, aggregate, anchor)

    # the audit (audit.py) of the kept labels: intransitive cycles, and the best accuracy any scalar
    # reward can reach on them; then how consistent repeated items' ratings and thumbs are
    examples = []
    for split in ("train", "test"):
        items, _ = load_feedback(os.path.join(out_dir, f"pairwise_{split}.jsonl"), "pairwise")
        rep = audit(to_pairs(items, "pairwise"))
        report.update({f"{split}/audit_max_agreement": rep["max_agreement"], f"{split}/audit_exact": rep["exact"],
                       f"{split}/prompts_with_cycles": rep["prompts_with_cycles"],
                       f"{split}/n_prompts": len({it["prompt"] for it in items})})
        examples += rep["examples"] if split == "train" else []
    for kind in ("likert", "binary"):
        items, _ = load_feedback(os.path.join(out_dir, f"{kind}_train.jsonl"), kind)
        rc = repeat_consistency([((it["prompt"], it["texts"][0]), it["y"]) for it in items])
        report.update({f"repeats/{kind}_items": rc["n_repeated"], f"repeats/{kind}_agreement": rc["agreement"]})
    log_metrics(rt.metrics_path, {"iter": 0, **report})
    with open(rt.metrics_path, "a") as f:  # what ran, for whoever reads these files later
        f.write(json.dumps({"config": config}) + "\n")
    for p, cyc in examples[:2]:
        print(f"  a cycle in {p!r}: " + " > ".join(repr(t[:40]) for t in cyc) + f" > {cyc[0][:40]!r}")
    bound = report["train/audit_max_agreement"]
    print(f"wrote {', '.join(f'{k}_{{train,test}}.jsonl' for k in ALL_KINDS)} to {out_dir}/: the kept labels agree "
          f"with gold {report['test/labels_acc_gold']:.3f} (test pairs); " +
          (f"no scalar reward can agree with more than {bound:.3f} of the train pairs" if report["train/audit_exact"]
           else f"a scalar reward can agree with {bound:.3f} of the train pairs (a greedy order: some prompt's "
                f"labels join over 12 responses, so the exact best may be a little higher)"))
