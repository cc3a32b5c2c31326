"""
data.py (goldRLHF): text in and out of the models: the tokenizer (GPT-2 BPE or a compact vocabulary), JSONL,
prompt templates, every dataset and feedback file format the stages read (README: Formats), batches for the
loss, and sampling responses. The built-in task is task.py; the simulated labelers are labelers.py.
"""
import json
import os
from itertools import combinations

import tiktoken
import torch

import kernels
from configurator import MissingFile, UserError

EOT_TEXT = "<|endoftext|>"
EOT = 50256  # GPT-2's <|endoftext|> id

# -----------------------------------------------------------------------------
# Tokenizer: tiktoken's GPT-2 BPE, or a compact vocabulary: a model of the built-in task needs only the 79
# GPT-2 tokens the task can produce, so its embedding and lm_head have 79 rows, not 50,257 (README). `vocab`
# lists those GPT-2 ids (model id i <-> vocab[i]), stored in every checkpoint; vocab=None is full GPT-2.

class Tokenizer:
    def __init__(self, vocab=None):
        self.enc = tiktoken.get_encoding("gpt2")
        self.vocab = list(vocab) if vocab is not None else None
        if self.vocab is None:
            self.vocab_size, self.eot = self.enc.n_vocab, EOT
        else:
            self.to_model = {g: i for i, g in enumerate(self.vocab)}
            self.vocab_size, self.eot = len(self.vocab), self.to_model[EOT]
            # the bytes of every compact token (not <|endoftext|>, which only the special text spells)
            self.by_bytes = {self.enc.decode_single_token_bytes(g): i for i, g in enumerate(self.vocab) if g != EOT}
            self.max_len = max(map(len, self.by_bytes))

    def encode(self, text, where="text"):
        """GPT-2 BPE ids, or compact ids. Decoded compact ids can BPE-merge into GPT-2 tokens outside the
        vocabulary (" I" + "I" -> " II"): such runs are re-spelled with the fewest compact tokens of the
        same bytes (`_respell`), so any text a compact model can write encodes back."""
        ids = self.enc.encode(text, allowed_special={EOT_TEXT})
        if self.vocab is None:
            return ids
        out, i = [], 0
        while i < len(ids):
            if ids[i] in self.to_model:
                out.append(self.to_model[ids[i]])
                i += 1
                continue
            j = i  # a run ids[i:j] of out-of-vocabulary tokens, widened until its bytes can be spelled
            while j < len(ids) and ids[j] not in self.to_model:
                j += 1
            lo, hi = i, j
            while (spelled := self._respell(ids[lo:hi])) is None and (lo > 0 or hi < len(ids)):
                lo, hi = max(0, lo - 1), min(len(ids), hi + 1)  # BPE may have merged across a boundary
            if spelled is None:
                bad = sorted({self.enc.decode([t]) for t in ids if t not in self.to_model})
                raise UserError(f"text has {bad[:5]}, which the model's compact vocabulary ({len(self.vocab)} "
                                f"tokens: the built-in task's, or its training data's) cannot spell", where,
                                "use only words it was trained on, or start from a full-vocabulary model, e.g. --init_from=gpt2")
            del out[len(out) - (i - lo):]  # the widened run re-spells tokens already emitted
            out += spelled
            i = hi
        return out

    def _respell(self, gpt2_ids):
        """The fewest compact ids spelling exactly the bytes of `gpt2_ids`, or None (dynamic programming:
        best[k] = fewest tokens spelling the first k bytes)."""
        if EOT in gpt2_ids:
            return None
        b = b"".join(self.enc.decode_single_token_bytes(t) for t in gpt2_ids)
        best = [None] * (len(b) + 1)
        best[0] = []
        for k in range(1, len(b) + 1):
            for L in range(1, min(self.max_len, k) + 1):
                prev, t = best[k - L], self.by_bytes.get(b[k - L:k])
                if prev is not None and t is not None and (best[k] is None or len(prev) + 1 < len(best[k])):
                    best[k] = prev + [t]
        return best[-1]

    def decode(self, ids):
        ids = [int(i) for i in ids]
        return self.enc.decode(ids if self.vocab is None else [self.vocab[i] for i in ids])

def vocab_of(texts):
    """The GPT-2 ids `texts` use, plus <|endoftext|> (sorted): a compact vocabulary for a model trained
    from scratch on them (sft.py --compact_vocab), e.g. rlaif.py's judge."""
    enc = tiktoken.get_encoding("gpt2")
    return sorted({i for t in texts for i in enc.encode(t, allowed_special={EOT_TEXT})} | {EOT})

# -----------------------------------------------------------------------------
# JSONL readers. Field names follow TRL where it has them; every error names the file and the line.

def read_text(path, what="file", fix=None):
    """The text of a file the user named. A missing path, a directory, an unreadable file or one that is not
    UTF-8 is one line naming the path (and the line of the first bad byte). A UTF-8 BOM is dropped."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise MissingFile(f"no such {what}", path, fix) from None
    except IsADirectoryError:
        raise UserError(f"the {what} is a directory", path, fix) from None
    except OSError as e:
        raise UserError(f"cannot read the {what} ({e.strerror})", path, fix) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UserError(f"the {what} is not UTF-8 text (byte {raw[e.start]:#04x})", f"{path}:{line}",
                        "save it as UTF-8") from None

def read_jsonl(path, required=()):
    """Read a JSONL file into a list of dicts (each with "_where": "path:line"). `required` lists
    alternatives of "|"-joined fields; a row must have all the fields of one of them."""
    text = read_text(path, "file", "check the path (--data_path / --test_path / --val_path)")
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON ({e.msg} at column {e.colno})", f"{path}:{n}",
                            "each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise UserError(f"expected a JSON object, got {type(row).__name__}", f"{path}:{n}")
        fields = next((r for r in required if all(k in row for k in r.split("|"))), None) \
            if required else ""
        if fields is None:
            want = " or ".join("{" + ", ".join(r.split("|")) + "}" for r in required)
            raise UserError(f"missing field(s): expected {want}, got {sorted(row)}", f"{path}:{n}")
        row["_where"] = f"{path}:{n}"
        rows.append(row)
    if not rows:
        raise UserError("empty dataset (no JSON lines)", path)
    return rows

def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n")
    os.replace(tmp, path)

# Prompt formatting. 'plain' uses the prompt text as is (the built-in task, TRL's prompt/completion);
# 'instruction' wraps it in the Alpaca-style template; chat `messages` use one plain-text template.
INSTRUCTION = "### Instruction:\n{prompt}\n\n### Response:\n"

def format_prompt(prompt, template="plain"):
    if template == "plain":
        return prompt
    if template == "instruction":
        return INSTRUCTION.format(prompt=prompt)
    raise UserError(f"unknown template {template!r}", "--template", "use 'plain' or 'instruction'")

def render_turns(messages, where="messages"):
    """[{role, content}, ...] -> the plain-text chat transcript, ending with "Assistant:" (the cue)."""
    text = ""
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise UserError("each message needs a role (system/user/assistant) and a string content", where)
        text += f"{m['role'].capitalize()}: {m['content']}\n\n"
    return text + "Assistant:"

def render_messages(messages, where="messages"):
    """[{role, content}, ...] -> (prompt, completion): the last assistant turn is the completion."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict) \
            or messages[-1].get("role") != "assistant":
        raise UserError("`messages` must be a list ending with an assistant turn", where)
    prompt = render_turns(messages[:-1], where)
    render_turns(messages[-1:], where)  # checks the last turn too
    return prompt, " " + messages[-1]["content"] + EOT_TEXT

def render_conversation(prompt, completion, where="messages"):
    """TRL's conversational rows: a `prompt` message list and a completion of one assistant turn -> (prompt,
    completion), rendered as `render_messages` renders the same turns in a `messages` row."""
    if not isinstance(prompt, list) or not isinstance(completion, list) or len(completion) != 1:
        raise UserError("a conversational row needs a `prompt` message list and each completion a list of one "
                        "assistant turn", where)
    return render_messages(prompt + completion, where)

# Dataset formats, detected from each row's fields (the first that fits); one format per file (README: Formats).
FORMATS = {
    "sft": [("messages", ("messages",)), ("alpaca", ("instruction", "output")),
            ("instruction_response", ("instruction", "response")), ("prompt_completion", ("prompt", "completion")),
            ("text", ("text",))],
    "preference": [("explicit", ("prompt", "chosen", "rejected")), ("implicit", ("chosen", "rejected"))],
    "ranking": [("ranking_indices", ("prompt", "responses", "ranking")), ("ranking", ("prompt", "ranking"))],
    "unpaired": [("unpaired", ("prompt", "completion", "label"))],
}

def read_format(path, family):
    """Rows of a JSONL file and the one format (of FORMATS[family]) they are all in."""
    formats = FORMATS[family]
    rows = read_jsonl(path, required=["|".join(f) for _, f in formats])
    name = lambda r: next(n for n, f in formats if all(k in r for k in f))
    first = name(rows[0])
    for r in rows[1:]:
        if name(r) != first:
            raise UserError(f"this row is in the {name(r)!r} format but line 1 is {first!r}; one file, one "
                            f"format", r["_where"], "split the file, or make every row the same")
    return rows, first

def _text(row, key, where):
    v = row[key]
    if not isinstance(v, str) or not v.strip():
        raise UserError(f"`{key}` must be a non-empty string, got {v!r}"[:160], where)
    return v

def load_sft_jsonl(path, template="plain"):
    """Demonstrations in any SFT format -> [(prompt, completion, where)]. {"text"} rows: the prompt is
    <|endoftext|> (GPT-2's document start), every token learned; Alpaca joins instruction and input."""
    rows, fmt = read_format(path, "sft")
    out = []
    for r in rows:
        w = r["_where"]
        if fmt == "messages":
            p, c = render_messages(r["messages"], w)
        elif fmt == "text":
            p, c = EOT_TEXT, _text(r, "text", w)
        elif fmt in ("alpaca", "instruction_response"):
            inp = r.get("input", "")
            if not isinstance(inp, str):
                raise UserError(f"`input` must be a string, got {inp!r}", w)
            q = _text(r, "instruction", w) + (f"\n\n{inp}" if inp.strip() else "")
            p = format_prompt(q, template) if template != "plain" else q + "\n"
            c = _text(r, "output" if fmt == "alpaca" else "response", w)
        elif isinstance(r["prompt"], list):  # TRL's conversational prompt-completion
            p, c = render_conversation(r["prompt"], r["completion"], w)
        else:
            p, c = format_prompt(_text(r, "prompt", w), template), _text(r, "completion", w)
        out.append((p, c, w))
    return out

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
            p, c, j = format_prompt(_text(r, "prompt", w), template), _text(r, "chosen", w), _text(r, "rejected", w)
        else:
            p, c, j = split_prompt(_text(r, "chosen", w), _text(r, "rejected", w), w)
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
        out.append(dict(prompt=_text(r, "prompt", w), ranking=ranking, where=w))
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
            p, c = _text(r, "prompt", w), _text(r, "completion", w)
        out.append(dict(prompt=p, completion=c, label=bool(y), where=w))
    return out

def load_prompts(path, template="plain"):
    """Prompts for the RL stages: {"prompt": text} rows (`template` applied) or TRL's conversational
    {"prompt": [messages]} (rendered as `messages` rows are, ending with the "Assistant:" cue)."""
    return [render_turns(r["prompt"], r["_where"]) if isinstance(r["prompt"], list)
            else format_prompt(_text(r, "prompt", r["_where"]), template) for r in read_jsonl(path, ("prompt",))]

# -----------------------------------------------------------------------------
# Feedback files (feedback.py and rlaif.py write them; reward.py, dpo.py and audit.py read them), one JSON
# object per line; responses are the text after the prompt, ending in "<|endoftext|>" when the writer stopped:
#   pairwise  {"prompt", "chosen", "rejected", "margin"?}  (margin: the vote margin, in [0, 1])
#   ties      {"prompt", "chosen", "rejected", "tie": bool} (a tie: the order means nothing)
#   rankings  {"prompt", "ranking": [best, ..., worst]}
#   likert    {"prompt", "completion", "score": 1..5}  (a float in [1, 5] too)
#   aspects   {"prompt", "completion", "scores": {aspect: 1..5}}
#   binary    {"prompt", "completion", "label": bool}      (thumbs up / down, TRL's unpaired format)
FEEDBACK_KINDS = ("pairwise", "ties", "rankings", "likert", "binary", "aspects")
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


# -----------------------------------------------------------------------------
# Batches for the loss, and sampling text from a model.

def collate_completions(rows, eot, batch_size=None):
    """(ids, n_prompt) rows -> right-padded x, y (batch_size, L - 1), L the longest row (extra rows are
    padding): y is x shifted by one, -100 (no loss) except on completion tokens. SFT's and DPO's batches."""
    L = max(len(ids) for ids, _ in rows)
    x = torch.full((batch_size or len(rows), L - 1), eot, dtype=torch.long)
    y = torch.full((batch_size or len(rows), L - 1), -100, dtype=torch.long)
    for i, (ids, n_p) in enumerate(rows):
        x[i, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, n_p - 1:len(ids) - 1] = torch.tensor(ids[n_p:])
    return x, y


def encode_prompts(tok, prompts, max_len, where="prompt"):
    """Tokenize prompts; a prompt that leaves no room for a response is an error, not a silent cut."""
    out = []
    for i, p in enumerate(prompts):
        ids = tok.encode(p, where=f"{where} {i}")
        if not ids or len(ids) > max_len:
            raise UserError(f"{where} {i} has {len(ids)} tokens; prompts must have 1..{max_len} tokens "
                             f"(block_size minus max_new_tokens). Shorten it or lower max_new_tokens.")
        out.append(ids)
    return out

def sample_responses(model, tok, prompts, max_new_tokens, temperature=1.0, batch_size=64, ref=None,
                     with_ids=False, **kw):
    """One response per prompt: texts (ending in <|endoftext|> if the model stopped), lengths in tokens,
    KLs[, ids]. Given `ref`, each KL is the exact KL(model || ref) summed over the sampled positions: an
    unbiased sequence-KL estimate with less variance than summing log p - log p_ref. with_ids: prompt +
    response ids as sampled, for a reward model to score as they are."""
    ids = encode_prompts(tok, prompts, model.config.block_size - max_new_tokens)
    texts, lengths, kls, seqs = [], [], [], []
    for i in range(0, len(ids), batch_size):
        out = model.generate(ids[i:i + batch_size], max_new_tokens, tok.eot, temperature, **kw)
        P, mask = out["prompt_len"], out["response_mask"]
        for k, (row, m) in enumerate(zip(out["tokens"][:, P:].tolist(), mask.sum(1).tolist())):
            texts.append(tok.decode(row[:m]))
            lengths.append(m)
            seqs.append(ids[i + k] + row[:m])
        if ref is not None:
            with torch.no_grad():  # logits at P-1+j predict response token j
                logits = model(out["tokens"], out["attention_mask"])[:, P - 1:-1]
                ref_logits = ref(out["tokens"], out["attention_mask"])[:, P - 1:-1]
                kl = kernels.kl(logits, ref_logits, temperature if temperature > 0 else 1.0)
            kls += (kl * mask).sum(1).tolist()
    return (texts, lengths, kls, seqs) if with_ids else (texts, lengths, kls)
