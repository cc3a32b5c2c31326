"""
feedback_data.py (goldRLHF): the preference and feedback files and their readers: preference pairs in
TRL's formats, rankings, thumbs up / down (unpaired), and the feedback kinds feedback.py and rlaif.py write
(README: Formats), each read into the items reward.py, dpo.py, audit.py and the experiments train on or
count; `to_pairs` turns any kind into (prompt, better, worse) pairs. Errors name the file and the line.
"""
from itertools import combinations

from configurator import UserError
from data import format_prompt, read_format, read_jsonl, render_conversation, render_messages, text_field

def split_prompt(chosen, rejected, where):
    """An implicit prompt: the longest common prefix of the two texts, cut after its last "Assistant:"
    (Anthropic HH's turn marker) or else at its last whitespace, so no word is split."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    k = chosen.rfind("Assistant:", 0, n)
    cut = k + len("Assistant:") if k >= 0 else max(chosen.rfind(c, 0, n) for c in " \n\t")
    if cut <= 0 or cut >= len(chosen) or cut >= len(rejected):
        raise UserError("chosen and rejected share no prompt to split off", where,
                        "add a `prompt` field (TRL's explicit-prompt format)")
    return chosen[:cut], chosen[cut:], rejected[cut:]

def load_preferences(path, template="plain"):
    """Preference pairs in any of TRL's formats -> dicts prompt, chosen, rejected, where (+ margin). An
    implicit prompt is split off (`split_prompt`); conversational: the `prompt` turns or else the shared turns
    are the prompt (UltraFeedback-binarized's `prompt` string repeats its shared user turn)."""
    rows, fmt = read_format(path, "preference")
    out = []
    for r in rows:
        w = r["_where"]
        conv = isinstance(r["chosen"], list)
        if conv and isinstance(r.get("prompt"), list):
            p, c = render_conversation(r["prompt"], r["chosen"], w)
            j = render_conversation(r["prompt"], r["rejected"], w)[1]
        elif conv:
            ch, rj = r["chosen"], r["rejected"]
            if not isinstance(rj, list) or len(ch) < 2 or ch[:-1] != rj[:-1]:
                raise UserError("conversational chosen / rejected must share every turn but the last", w)
            p, c = render_messages(ch, w)
            j = render_messages(rj, w)[1]
        elif fmt == "explicit":
            p, c, j = format_prompt(text_field(r, "prompt", w), template), text_field(r, "chosen", w), \
                text_field(r, "rejected", w)
        else:
            p, c, j = split_prompt(text_field(r, "chosen", w), text_field(r, "rejected", w), w)
        row = dict(prompt=p, chosen=c, rejected=j, where=w)
        if "margin" in r:
            if not isinstance(r["margin"], (int, float)) or isinstance(r["margin"], bool):
                raise UserError(f"margin must be a number, got {r['margin']!r}", w)
            row["margin"] = float(r["margin"])
        if r.get("tie", False) is not False:  # a tie: the order means nothing (pairwise losses, DPO skip it)
            if r["tie"] is not True:
                raise UserError(f"tie must be true or false, got {r['tie']!r}", w)
            row["tie"] = True
        out.append(row)
    return out

def load_rankings(path):
    """Rankings -> list of dicts prompt, ranking (response texts, best first), where. Either the texts
    in order ({"prompt","ranking":[...]}) or {"prompt","responses":[...],"ranking":[indices, best first]}."""
    rows, fmt = read_format(path, "ranking")
    out = []
    for r in rows:
        w, ranking = r["_where"], r["ranking"]
        if fmt == "ranking_indices":
            resp = r["responses"]
            if not isinstance(resp, list) or not isinstance(ranking, list) or \
                    not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(resp) for i in ranking) \
                    or len(set(ranking)) < len(ranking):
                raise UserError("`ranking` must list distinct indices into `responses`, best first", w)
            ranking = [resp[i] for i in ranking]
        if not isinstance(ranking, list) or len(ranking) < 2 or \
                not all(isinstance(t, str) and t.strip() for t in ranking):
            raise UserError("a ranking needs at least 2 non-empty response strings, best first", w)
        out.append(dict(prompt=text_field(r, "prompt", w), ranking=ranking, where=w))
    return out

def load_unpaired(path):
    """Thumbs up / down (TRL's unpaired preference format, text or conversational; the label true / false or
    1 / 0) -> dicts prompt, completion, label (bool), where."""
    rows, _ = read_format(path, "unpaired")
    out = []
    for r in rows:
        w, y = r["_where"], r["label"]
        if not isinstance(y, bool) and not (type(y) is int and y in (0, 1)):
            raise UserError(f"label must be true / false or 1 / 0, got {y!r}", w)
        if isinstance(r["prompt"], list):
            p, c = render_conversation(r["prompt"], r["completion"], w)
        else:
            p, c = text_field(r, "prompt", w), text_field(r, "completion", w)
        out.append(dict(prompt=p, completion=c, label=bool(y), where=w))
    return out

# -----------------------------------------------------------------------------
# Feedback files (feedback.py and rlaif.py write them; reward.py, dpo.py and audit.py read them), one JSON
# object per line; responses are the text after the prompt, ending in "<|endoftext|>" when the writer stopped:
#   pairwise  {"prompt", "chosen", "rejected", "margin"?}  (margin: the vote margin, in [0, 1])
#   ties      {"prompt", "chosen", "rejected", "tie": bool} (a tie: the order means nothing)
#   rankings  {"prompt", "ranking": [best, ..., worst]}
#   likert    {"prompt", "completion", "score": 1..5}  (a float in [1, 5] too)
#   aspects   {"prompt", "completion", "scores": {aspect: 1..5}}
#   binary    {"prompt", "completion", "label": bool}      (thumbs up / down, TRL's unpaired format)
TIE = ": a tie"  # the end of a skipped row's note when it was a tie

def _rating(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 1 <= v <= 5  # (NaN: False)

def load_feedback(path, kind, aspect=None):
    """(items, skipped): dicts prompt, texts (best first) and y (margin, tie, score, {aspect: score}, or
    `aspect`'s score). A malformed row is an error naming file and line; rows with identical responses
    compare nothing and are skipped, and so are ties for `pairwise` (no tie outcome: --label_kind=ties has one)."""
    if kind == "pairwise":
        rows = [dict(prompt=r["prompt"], texts=[r["chosen"], r["rejected"]], y=r.get("margin"), where=r["where"],
                     tie=r.get("tie", False)) for r in load_preferences(path)]
    elif kind == "rankings":
        rows = [dict(prompt=r["prompt"], texts=r["ranking"], y=None, where=r["where"]) for r in load_rankings(path)]
    elif kind == "binary":
        rows = [dict(prompt=r["prompt"], texts=[r["completion"]], y=r["label"], where=r["where"])
                for r in load_unpaired(path)]
    else:
        need = dict(ties=("prompt|chosen|rejected|tie",), likert=("prompt|completion|score",),
                    aspects=("prompt|completion|scores",))[kind]
        rows = []
        for row in read_jsonl(path, required=need):
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
                bad = [v for v in y.values() if not _rating(v)]
                if bad:
                    raise UserError(f"scores must be numbers in [1, 5], got {bad[0]!r}", w)
                y = y if aspect is None else y[aspect]
            if kind == "ties" and not isinstance(y, bool):
                raise UserError(f"tie must be true or false, got {y!r}", w)
            if kind == "likert" and not _rating(y):
                raise UserError(f"score must be a number in [1, 5], got {y!r}", w)
            rows.append(dict(prompt=row["prompt"], texts=texts, y=y, where=w))
    items, skipped = [], []
    for it in rows:
        if len(set(it["texts"])) < len(it["texts"]):
            skipped.append(f"{it['where']}: identical responses")
        elif it.pop("tie", False):
            skipped.append(f"{it['where']}{TIE}")
        else:
            items.append(it)
    ties = sum(s.endswith(TIE) for s in skipped)
    if not items and ties:
        raise UserError(f"only ties ({ties} of {len(skipped)} rows; the rest identical): a pairwise loss has no tie "
                        "outcome, so nothing is left to learn from", path, "add rows with a winner")
    if not items:
        raise UserError(f"no usable rows ({len(skipped)} skipped, e.g. {skipped[:1]})", path)
    return items, skipped


def uninformative(items, kind, loss=""):
    """Why a reward model could learn nothing from `items`, or None: thumbs all one way, ratings all equal,
    or only ties (Rao-Kupper too: ties say "about equal", never which response is better)."""
    n, ys = len(items), {float(it["y"]) for it in items if not isinstance(it["y"], (dict, type(None)))}
    if kind == "binary" and len(ys) == 1:
        return f"all {n} thumbs are {'up' if items[0]['y'] else 'down'}: a classifier of one label learns nothing"
    if kind in ("likert", "aspects") and len(ys) == 1:
        return f"all {n} ratings are {items[0]['y']}: equal ratings rank nothing"
    if kind == "ties" and all(it["y"] for it in items):
        return f"all {n} rows are ties ({loss or 'any loss'}): nothing says which response is better"
    return None


def detect_kind(path):
    """The kind of a feedback file, from the fields of its first row."""
    row = read_jsonl(path)[0]
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
