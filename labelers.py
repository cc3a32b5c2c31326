"""
labelers.py (goldRLHF): who labels a pair, and how; shared by feedback.py, rlaif.py, dpo.py --online and grpo.py.
- simulated people, noisy views of task.gold: Bradley-Terry choices, ties, 1-5 ratings, Plackett-Luce rankings,
  thumbs, from a pool of labeler types (careful, noisy, verbose, positive, adversarial), by majority (label_group)
- the AI judge (Bai et al. 2022; Lee et al. 2023): given a principle, the prompt and responses A and B, it
  prefers A by log P(" A") - log P(" B"), both orders averaged against its position bias (swap_average: the
  log-odds' mean for a reward or a vote, the probabilities' mean for a soft label)
"""
import math
from itertools import combinations

import torch

import common
import data
import task
from configurator import UserError

GROUP_KINDS = data.FEEDBACK_KINDS[:4]  # what label_group writes from one labelling: pairwise, ties, rankings, likert


# ----------------------------------------------------------------------------- simulated people
# People compare K responses per prompt (Ziegler et al. 2019; Ouyang et al. 2022); gold plus noise plays them.

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
    """A 1-5 rating of one aspect: [worst, best] of task.ASPECTS mapped to [1, 5], noise x half the range, rounded."""
    lo, hi = task.ASPECTS[aspect]
    return int(min(5, max(1, round(1 + 4 * (v + rng.gauss(0, noise) * (hi - lo) / 2 - lo) / (hi - lo)))))

def label_binary(g, rng, threshold=task.ACCEPT_THRESHOLD, noise=task.ACCEPT_NOISE):
    """Thumbs up (True) when the gold score plus Gaussian noise clears the threshold."""
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



# People who are not all alike ("noisy and inconsistent" annotators) give the pairwise labels; ties,
# rankings and Likert ratings come from careful ones.
# Two of them have the biases people are known to have: verbose ones prefer longer answers (Singhal et al. 2023,
# "A Long Way to Go"), positive ones the more agreeable, glowing answer (Sharma et al. 2023, sycophancy).
LABELER_TYPES = ("careful", "noisy", "verbose", "positive", "adversarial")
NOISY = 4.0  # a noisy labeler's Bradley-Terry temperature, in units of the careful one's
LENGTH_BONUS = 0.1  # a verbose labeler's utility: gold + this per word (prefers the longer response)
POSITIVE_BONUS = 0.3  # a positive labeler's utility: gold + this x the review's praise (task.praise)


def make_pool(spec, n_people):
    """'careful:0.6,noisy:0.2,adversarial:0.2' -> n_people labeler types in those shares (largest remainders)."""
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


def vote(kind, a, b, rng, temperature=0.25, noisy=NOISY, length_bonus=LENGTH_BONUS, positive_bonus=POSITIVE_BONUS):
    """True if a labeler of type `kind` prefers a; a, b: (gold, words, praise) of the two responses. Noisy:
    NOISY x temperature; verbose: gold + length_bonus x words; positive: gold + positive_bonus x praise;
    adversarial: flipped."""
    (g_a, words_a, praise_a), (g_b, words_b, praise_b) = a, b
    if kind == "noisy":
        return label_pair(g_a, g_b, rng, noisy * temperature)
    if kind == "verbose":
        return label_pair(g_a + length_bonus * words_a, g_b + length_bonus * words_b, rng, temperature)
    if kind == "positive":
        return label_pair(g_a + positive_bonus * praise_a, g_b + positive_bonus * praise_b, rng, temperature)
    vote = label_pair(g_a, g_b, rng, temperature)
    return not vote if kind == "adversarial" else vote

def agreement(votes):
    """(agreeing, total) pairs of annotators that gave the same label."""
    n = len(votes)
    return sum(a == b for a, b in combinations(votes, 2)), n * (n - 1) // 2


def label_group(prompt, responses, rng, n_annotators=3, temp=0.25, tie_margin=0.15, noise=0.3, pool=None,
                noisy=NOISY, length_bonus=LENGTH_BONUS, positive_bonus=POSITIVE_BONUS):
    """n_annotators people (drawn per pair from `pool`, default careful) give every kind of feedback on K responses.
    Returns ({kind: rows in the file formats}, {kind: [agreeing, total pairs]}); pairwise rows keep _votes etc."""
    uniq = list(dict.fromkeys(responses))  # identical responses can't be compared
    g = [task.gold(prompt, r) for r in uniq]
    seen = [(g[i], len(r.replace(data.EOT_TEXT, "").split()), task.praise(r)) for i, r in enumerate(uniq)]
    pool = pool or ["careful"] * n_annotators
    rows, agree = {k: [] for k in GROUP_KINDS}, {k: [0, 0] for k in GROUP_KINDS}

    def tally(kind, votes):
        a, n = agreement(votes)
        agree[kind][0] += a
        agree[kind][1] += n

    for i, j in combinations(range(len(uniq)), 2):
        who = list(range(n_annotators)) if len(pool) == n_annotators else rng.sample(range(len(pool)), n_annotators)
        votes = [vote(pool[w], seen[i], seen[j], rng, temp, noisy, length_bonus, positive_bonus) for w in who]
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



def label_binary_group(prompt, responses, rng, n_annotators=3):
    """Thumbs up / down on each distinct response by majority (a tie: a coin) -> (rows, [agreeing, total])."""
    rows, agree = [], [0, 0]
    for r in dict.fromkeys(responses):
        votes = [label_binary(task.gold(prompt, r), rng) for _ in range(n_annotators)]
        a, n = agreement(votes)
        agree = [agree[0] + a, agree[1] + n]
        up = 2 * sum(votes) > n_annotators or (2 * sum(votes) == n_annotators and rng.random() < 0.5)
        rows.append(dict(prompt=prompt, completion=r, label=up))
    return rows, agree


def label_aspect_group(prompt, responses, rng, n_annotators=3, noise=0.3):
    """Every aspect of each distinct response rated 1-5, the median kept -> (rows, [agreeing, total])."""
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



# ----------------------------------------------------------------------------- the AI judge
def shown(response):
    """A response as the judge reads it: without <|endoftext|>, and ' ...' if it never ended."""
    return response[:-len(data.EOT_TEXT)] if response.endswith(data.EOT_TEXT) else response.replace(data.EOT_TEXT, "") + " ..."


def judge_text(principle, prompt, a, b):
    """The judge's prompt: principle, the review's opening, responses a (slot A) and b (slot B)."""
    return f"{principle}\nReview: {prompt}\nA:{shown(a)}\nB:{shown(b)}\nBetter:"


def rating_text(principle, prompt, a):
    """The judge's prompt for a 1-5 rating of one response under the principle (its training data only)."""
    return f"{principle}\nReview: {prompt}\nA:{shown(a)}\nRating:"


def swap_average(lo_ab, lo_ba):
    """lo_ab, lo_ba (N,): log-odds for slot A with a, then b, in it. Returns (lo_ab - lo_ba) / 2 (a beats b, the
    position bias cancelled: a reward, a vote's sign), the pull toward slot A (lo_ab + lo_ba) / 2, whether both
    orders agree, and P(a beats b) = (sigmoid(lo_ab) + sigmoid(-lo_ba)) / 2, the two orders' probabilities
    averaged (Lee et al. 2023, "Addressing Position Bias"): a soft label. sigmoid is monotone, so P - 1/2 has
    the sign of the log-odds mean; only the margin differs."""
    return ((lo_ab - lo_ba) / 2, (lo_ab + lo_ba) / 2, (lo_ab > 0) == (lo_ba < 0),
            (torch.sigmoid(lo_ab) + torch.sigmoid(-lo_ba)) / 2)


def soft_margin(p_a):
    """A pair's margin from P(a beats b): |2 P - 1| in [0, 1], to 4 places (as feedback.py's vote margin)."""
    return round(abs(2 * p_a - 1), 4)


def answer_ids(tok, where):
    """The ids of " A" and " B" in the judge's vocabulary: each must be one token."""
    ids = []
    for t in (" A", " B"):
        try:
            ids.append(tok.encode(t))
        except UserError:  # a compact vocabulary without the bytes
            ids.append([])
    if not all(len(i) == 1 for i in ids):
        raise UserError("the judge's vocabulary cannot write ' A' and ' B' as single tokens", where,
                        "train the judge on rlaif.py --mode=demos (sft.py --compact_vocab keeps them), or use a GPT-2 model")
    return ids[0][0], ids[1][0]


@torch.no_grad()
def judge_logodds(model, tok, texts, a_id, b_id, batch_size=64):
    """log P(" A") - log P(" B") after each of N judge prompts (each must fit the context) -> (N,)."""
    out = []
    for i in range(0, len(texts), batch_size):
        ids = [tok.encode(t) for t in texts[i:i + batch_size]]
        n = torch.tensor([len(s) for s in ids])
        x = torch.full((len(ids), int(n.max())), tok.eot, dtype=torch.long)
        for k, s in enumerate(ids):
            x[k, :len(s)] = torch.tensor(s)
        dev = next(model.parameters()).device
        h = model(x.to(dev), hidden=True)[torch.arange(len(ids), device=dev), (n - 1).to(dev)]  # (b, C): the answer position
        logits = model.lm_head(h).float()
        out.append((logits[:, a_id] - logits[:, b_id]).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def judge_pairs(model, tok, items, a_id, b_id, batch_size=64):
    """(principle, prompt, a, b) items -> swap_average's four as lists; None where the judge can't read a pair."""
    keep, texts = [], []
    for pr, p, a, b in items:
        try:
            t = [judge_text(pr, p, a, b), judge_text(pr, p, b, a)]
            ok = max(len(tok.encode(x)) for x in t) <= model.config.block_size
        except UserError:
            ok = False
        keep.append(len(texts) // 2 if ok else None)
        texts += t if ok else []
    lo = judge_logodds(model, tok, texts, a_id, b_id, batch_size)
    return tuple([None if k is None else x[k].item() for k in keep] for x in swap_average(lo[0::2], lo[1::2]))



def load_judge(path, principles_path, device, builtin=False):
    """The frozen judge (a checkpoint or GPT-2), its tokenizer, the ids of " A" and " B", its principles."""
    model, vocab, _ = common.load_frozen(path, None, "judge", device, same_vocab=False)
    tok = data.Tokenizer(vocab)
    a_id, b_id = answer_ids(tok, path)
    return model, tok, a_id, b_id, read_principles(principles_path, tok, model.config.block_size, builtin)


def read_principles(path, tok, block_size, builtin=False, default=(task.DEFAULT_PRINCIPLE,)):
    """The principles file, one per line, '#' lines skipped ('': `default`); builtin: only task.PRINCIPLES."""
    if not path:
        return list(default)
    out = []
    for n, line in enumerate(data.read_text(path, "principles file", "write one principle per line").split("\n"), 1):
        p = line.strip()
        if not p or p.startswith("#"):
            continue
        if tok is not None and len(tok.encode(p, f"{path}:{n}")) > block_size // 2:
            raise UserError(f"this principle has {len(tok.encode(p))} tokens: with two responses it cannot "
                            f"fit the judge's context of {block_size}", f"{path}:{n}", "shorten it")
        if builtin and p not in task.PRINCIPLES:
            raise UserError(f"the built-in task's people cannot follow {p!r}", f"{path}:{n}",
                            "use lines of task.PRINCIPLES: " + " | ".join(task.PRINCIPLES))
        out.append(p)
    if not out:
        raise UserError("the principles file has no principle", path, "write one principle per line")
    return out

