"""
data.py (goldRLHF): text in and out of the models: the tokenizer (GPT-2 BPE or a compact vocabulary), JSONL,
prompt templates, the demonstration and prompt formats the stages read (README: Formats; the preference and
feedback files: feedback_data.py), batches for the loss, and sampling responses. The built-in task is task.py;
the simulated labelers are labelers.py.
"""
import json
import os

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
FEEDBACK_KINDS = ("pairwise", "ties", "rankings", "likert", "binary", "aspects")  # feedback files (feedback_data.py)

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

def text_field(row, key, where):
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
            p, c = EOT_TEXT, text_field(r, "text", w)
        elif fmt in ("alpaca", "instruction_response"):
            inp = r.get("input", "")
            if not isinstance(inp, str):
                raise UserError(f"`input` must be a string, got {inp!r}", w)
            q = text_field(r, "instruction", w) + (f"\n\n{inp}" if inp.strip() else "")
            p = format_prompt(q, template) if template != "plain" else q + "\n"
            c = text_field(r, "output" if fmt == "alpaca" else "response", w)
        elif isinstance(r["prompt"], list):  # TRL's conversational prompt-completion
            p, c = render_conversation(r["prompt"], r["completion"], w)
        else:
            p, c = format_prompt(text_field(r, "prompt", w), template), text_field(r, "completion", w)
        out.append((p, c, w))
    return out

def load_prompts(path, template="plain", lines=False):
    """Prompts for the RL stages: {"prompt": text} rows (`template` applied) or TRL's conversational
    {"prompt": [messages]} (rendered as `messages` rows are, ending with the "Assistant:" cue). lines=True:
    (prompts, each one's file:line)."""
    rows = read_jsonl(path, ("prompt",))
    prompts = [render_turns(r["prompt"], r["_where"]) if isinstance(r["prompt"], list)
               else format_prompt(text_field(r, "prompt", r["_where"]), template) for r in rows]
    return (prompts, [r["_where"] for r in rows]) if lines else prompts


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


def prompt_room(max_new_tokens, contexts):
    """The tokens a prompt may have: the smallest context (block_size) of `contexts` ({what: block_size}, the
    models a sample passes through) minus --max_new_tokens. None left is one line naming the key and its range."""
    what, T = min(contexts.items(), key=lambda kv: kv[1])
    if max_new_tokens >= T:
        raise UserError(f"--max_new_tokens={max_new_tokens}: must be < {T}, the context (block_size) of the {what}, "
                        "which holds the prompt too", fix="lower --max_new_tokens")
    return T - max_new_tokens

def encode_prompts(tok, prompts, max_len, where="prompt"):
    """Tokenize prompts; a prompt that leaves no room for a response (or has a token the vocabulary lacks) is
    an error naming it, not a silent cut. where: one location per prompt (file:line), or a label (label i)."""
    out = []
    for i, p in enumerate(prompts):
        w = where[i] if isinstance(where, (list, tuple)) else f"{where} {i}"
        ids = tok.encode(p, where=w)
        if not ids or len(ids) > max_len:
            raise UserError(f"the prompt has {len(ids)} tokens; the context leaves it 1..{max_len} (the model's "
                            "block_size minus --max_new_tokens)", w, "shorten it, or lower --max_new_tokens")
        out.append(ids)
    return out

def sample_responses(model, tok, prompts, max_new_tokens, temperature=1.0, batch_size=64, ref=None,
                     with_ids=False, keep=None, **kw):
    """One response per prompt: texts (ending in <|endoftext|> if the model stopped), lengths in tokens, KLs[, ids].
    Given `ref`, each KL is the exact KL(model || ref) summed over the sampled positions (less variance than
    log p - log p_ref). with_ids: prompt + response ids as sampled. keep: a list given each generate() output."""
    ids = encode_prompts(tok, prompts, prompt_room(max_new_tokens, {"model": model.config.block_size}))
    texts, lengths, kls, seqs = [], [], [], []
    for i in range(0, len(ids), batch_size):
        out = model.generate(ids[i:i + batch_size], max_new_tokens, tok.eot, temperature, **kw)
        if keep is not None:
            keep.append(out)
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
