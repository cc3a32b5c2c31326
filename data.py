"""
data.py: the tokenizer, JSONL readers, prompt formatting, the built-in task with its hidden gold
scorer, and the simulated human labelers that turn gold scores into noisy feedback.

The built-in task ("reviews") needs no download. Prompts open a short review of a place:

    I went to the cafe with my family.

and the model continues it with sentences of a tiny grammar, then ends with <|endoftext|>:

    The coffee was very good. I hated the cake. I would go again.<|endoftext|>

`gold(prompt, response)` plays the human: it likes positive, on-topic, grammatical, short, finished
reviews. It is never a training signal except through the simulated labelers below and, explicitly,
as a "verifiable reward" in grpo.py; every stage reports it on held-out prompts.
"""
import json
import math
import os
import random
import re

import tiktoken

EOT_TEXT = "<|endoftext|>"
EOT = 50256  # GPT-2's <|endoftext|> id

# -----------------------------------------------------------------------------
# Tokenizer: tiktoken's GPT-2 BPE, optionally restricted to a compact vocabulary.
# A model on the built-in task uses only the ~70 GPT-2 tokens the task can produce; its embedding and
# lm_head then have 70 rows instead of 50,257 (about 30x faster on a CPU). `vocab` is that list of GPT-2
# ids (model id i <-> GPT-2 id vocab[i]) and is stored in every checkpoint. vocab=None is full GPT-2.

class Tokenizer:
    def __init__(self, vocab=None):
        self.enc = tiktoken.get_encoding("gpt2")
        self.vocab = list(vocab) if vocab is not None else None
        if self.vocab is None:
            self.vocab_size, self.eot = self.enc.n_vocab, EOT
        else:
            self.to_model = {g: i for i, g in enumerate(self.vocab)}
            self.vocab_size, self.eot = len(self.vocab), self.to_model[EOT]

    def encode(self, text, where="text"):
        ids = self.enc.encode(text, allowed_special={EOT_TEXT})
        if self.vocab is None:
            return ids
        # Text sampled from a compact model can merge into a GPT-2 token outside its vocabulary ("." "."
        # decodes to "..", which BPE re-encodes as one token): spell such a token one character at a time.
        ids = [j for i in ids for j in ([i] if i in self.to_model else
                                        [k for ch in self.enc.decode([i]) for k in self.enc.encode(ch)])]
        missing = [self.enc.decode([i]) for i in ids if i not in self.to_model]
        if missing:
            raise ValueError(f"{where}: tokens {missing[:5]} are not in this model's compact vocabulary "
                             f"(the built-in task's {len(self.vocab)} tokens). For your own data start "
                             f"from a full-vocabulary model, e.g. --init_from=gpt2.")
        return [self.to_model[i] for i in ids]

    def decode(self, ids):
        ids = [int(i) for i in ids]
        return self.enc.decode(ids if self.vocab is None else [self.vocab[i] for i in ids])

# -----------------------------------------------------------------------------
# JSONL readers. Field names follow TRL where it has them.

def read_jsonl(path, required=()):
    """Read a JSONL file into a list of dicts; every error names the file and the line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            fields = next((r for r in required if all(k in row for k in r.split("|"))), None) \
                if required else ""
            if fields is None:
                want = " or ".join("{" + ", ".join(r.split("|")) + "}" for r in required)
                raise ValueError(f"{path}:{n}: missing field(s): expected {want}, got {sorted(row)}")
            row["_where"] = f"{path}:{n}"
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: empty dataset (no JSON lines)")
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
    raise ValueError(f"unknown template {template!r}: use 'plain' or 'instruction'")

def render_messages(messages, where="messages"):
    """[{role, content}, ...] -> (prompt, completion): the last assistant turn is the completion."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError(f"{where}: `messages` must end with an assistant turn")
    text = ""
    for m in messages[:-1]:
        if m.get("role") not in ("system", "user", "assistant") or "content" not in m:
            raise ValueError(f"{where}: each message needs a role (system/user/assistant) and content")
        text += f"{m['role'].capitalize()}: {m['content']}\n\n"
    return text + "Assistant:", " " + messages[-1]["content"] + EOT_TEXT

def load_sft_jsonl(path, template="plain"):
    """{"prompt","completion"} or {"messages"} rows -> list of (prompt, completion, where)."""
    out = []
    for r in read_jsonl(path, required=("prompt|completion", "messages")):
        if "messages" in r:
            out.append((*render_messages(r["messages"], r["_where"]), r["_where"]))
        else:
            out.append((format_prompt(r["prompt"], template), r["completion"], r["_where"]))
    return out

# -----------------------------------------------------------------------------
# The built-in task: a tiny review grammar with a sentiment lexicon.

PLACES = {  # each place has the things a review of it may talk about
    "cafe": ["coffee", "cake", "tea", "staff", "music"],
    "hotel": ["room", "bed", "view", "staff", "breakfast"],
    "cinema": ["film", "plot", "acting", "seats", "music"],
    "restaurant": ["food", "pasta", "soup", "wine", "service"],
    "museum": ["exhibition", "guide", "building", "staff", "shop"],
    "bakery": ["bread", "cake", "price", "service", "coffee"],
}
NOUNS = sorted({n for ns in PLACES.values() for n in ns})
WHEN = ["", " last week", " yesterday", " on Friday", " in the morning", " after work", " again"]
WHO = ["", " with my family", " with friends", " alone", " with my sister", " with a colleague"]
ADJ = {"great": 1.0, "excellent": 1.0, "lovely": 1.0, "good": 0.5, "nice": 0.5, "okay": 0.0,
       "bad": -0.5, "poor": -0.5, "awful": -1.0, "terrible": -1.0, "horrible": -1.0}
VERB = {"loved": 1.0, "enjoyed": 1.0, "liked": 0.5, "disliked": -0.5, "hated": -1.0}
INTENS = ["very", "really"]  # scale the adjective by 1.5 (capped at +-1)
AGAIN = {"I would go again": 1.0, "I would not go again": -1.0}

def all_prompts():
    return [f"I went to the {p}{w}{c}." for p in PLACES for w in WHEN for c in WHO]

def task_prompts(split):
    """Deterministic 80/20 split of the 252 prompts; 'test' prompts are never trained on."""
    ps = all_prompts()
    test = [p for i, p in enumerate(ps) if i % 5 == 2]
    return test if split == "test" else [p for p in ps if p not in test]

def _sentence(rng, place):
    nouns = PLACES[place] if rng.random() < 0.9 else NOUNS  # demonstrations drift off-topic 10% of the time
    n, a, b = rng.choice(nouns), rng.choice(list(ADJ)), rng.choice(list(ADJ))
    return rng.choice([f"The {n} was {a}.", f"The {n} was {rng.choice(INTENS)} {a}.",
                       f"The {n} was not {a}.", f"The {n} was {a} and {b}.",
                       f"I {rng.choice(list(VERB))} the {n}.", rng.choice(list(AGAIN)) + "."])

def task_demos(n, seed=0, split="train"):
    """n demonstrations (prompt, completion): 1-3 sentences of random sentiment, then <|endoftext|>."""
    rng = random.Random(seed)
    prompts = task_prompts(split)
    out = []
    for _ in range(n):
        p = rng.choice(prompts)
        place = p.split()[4].rstrip(".")
        sentences, k = [], rng.randint(1, 3)
        while len(sentences) < k:
            s = _sentence(rng, place)
            sentences += [s] if s not in sentences else []  # people don't repeat themselves
        out.append((p, " " + " ".join(sentences) + EOT_TEXT))
    return out

def task_vocab(tok=None):
    """The GPT-2 ids the task can produce (sorted), plus <|endoftext|>: the compact vocabulary."""
    enc = (tok or Tokenizer()).enc
    words = set(" ".join(all_prompts()).replace(".", " ").split()) | set(NOUNS) | set(ADJ) | set(VERB)
    words |= set(" ".join(AGAIN).split()) | set(INTENS) | {"The", "was", "not", "and", "the", "I"}
    ids = {i for w in words for i in enc.encode(" " + w)} | set(enc.encode("I")) | set(enc.encode("."))
    return sorted(ids | {EOT})

def _value(words, place):
    """Sentiment of one sentence (a list of words) in [-1, 1], 0 if off-topic, None if it doesn't parse."""
    sent = " ".join(words)
    if sent in AGAIN:
        return AGAIN[sent]
    if len(words) == 4 and words[0] == "I" and words[1] in VERB and words[2] == "the" and words[3] in NOUNS:
        noun, v = words[3], VERB[words[1]]
    elif len(words) >= 4 and words[:1] == ["The"] and words[1] in NOUNS and words[2] == "was":
        noun, rest = words[1], words[3:]
        if len(rest) == 1 and rest[0] in ADJ:
            v = ADJ[rest[0]]
        elif len(rest) == 2 and rest[0] in INTENS and rest[1] in ADJ:
            v = max(-1.0, min(1.0, 1.5 * ADJ[rest[1]]))
        elif len(rest) == 2 and rest[0] == "not" and rest[1] in ADJ:
            v = -0.5 * ADJ[rest[1]]  # litotes: "not bad" is mildly positive, "not great" mildly negative
        elif len(rest) == 3 and rest[0] in ADJ and rest[1] == "and" and rest[2] in ADJ:
            v = (ADJ[rest[0]] + ADJ[rest[2]]) / 2
        else:
            return None
    else:
        return None
    return v if place is None or noun in PLACES[place] else 0.0

def parse(prompt, response):
    """Split a response into sentences and score each: (values, ended). None marks an unparsable one."""
    m = re.match(r"I went to the (\w+)", prompt)
    place = m.group(1) if m and m.group(1) in PLACES else None
    ended = response.endswith(EOT_TEXT)
    text = response[: -len(EOT_TEXT)] if ended else response
    if EOT_TEXT in text:
        text = text[: text.index(EOT_TEXT)]
    pieces = [s.strip() for s in text.split(".")]
    sentences = pieces[:-1] + ([pieces[-1]] if pieces[-1] else [])  # a trailing fragment has no "."
    values, seen = [], set()
    for i, s in enumerate(sentences):
        v = _value(s.split(), place) if i < len(pieces) - 1 else None
        values.append(None if v is None or s in seen else v)  # a repeated sentence counts as garbage
        seen.add(s)
    return values, ended

def gold(prompt, response):
    """The hidden human. Mean sentence sentiment (unparsable or repeated sentences count -1, off-topic 0),
    -0.5 if the review never ends, -0.25 per sentence beyond 4. Range about [-2, 1]; 1 is perfect."""
    values, ended = parse(prompt, response)
    if not values:
        return -1.0 - (0.0 if ended else 0.5)
    g = sum(-1.0 if v is None else v for v in values) / len(values)
    return g - (0.0 if ended else 0.5) - 0.25 * max(0, len(values) - 4)

def parses(prompt, response):
    """True if every sentence is in the grammar (on or off topic) and the response ended."""
    values, ended = parse(prompt, response)
    return ended and bool(values) and all(v is not None for v in values)

# -----------------------------------------------------------------------------
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

def label_ranking(golds, rng, temperature=0.25):
    """A full ranking of K (best first) drawn from Plackett-Luce with utilities gold / temperature."""
    left, order = list(range(len(golds))), []
    while left:
        w = [math.exp(golds[i] / temperature) for i in left]
        i = rng.choices(left, weights=w)[0]
        order.append(i)
        left.remove(i)
    return order

# -----------------------------------------------------------------------------
# Sampling text from a model, and the task report every stage prints.

def encode_prompts(tok, prompts, max_len, where="prompt"):
    """Tokenize prompts; a prompt that leaves no room for a response is an error, not a silent cut."""
    out = []
    for i, p in enumerate(prompts):
        ids = tok.encode(p, where=f"{where} {i}")
        if not ids or len(ids) > max_len:
            raise ValueError(f"{where} {i} has {len(ids)} tokens; prompts must have 1..{max_len} tokens "
                             f"(block_size minus max_new_tokens). Shorten it or lower max_new_tokens.")
        out.append(ids)
    return out

def sample_responses(model, tok, prompts, max_new_tokens, temperature=1.0, batch_size=64, ref=None, **kw):
    """Generate one response per prompt. Returns the texts (ending in <|endoftext|> when the model
    stopped), their lengths in tokens and, given a reference model, each response's sequence KL estimate
    in nats: the exact full-vocabulary KL(model || ref) at every position of the sampled response
    (kernels.kl), summed. Its mean over responses is an unbiased estimate of the sequence KL, with less
    variance than summing log p - log p_ref (the per-position part is exact; the positions are sampled)."""
    import torch
    import kernels
    ids = encode_prompts(tok, prompts, model.config.block_size - max_new_tokens)
    texts, lengths, kls = [], [], []
    for i in range(0, len(ids), batch_size):
        out = model.generate(ids[i:i + batch_size], max_new_tokens, tok.eot, temperature, **kw)
        P, mask = out["prompt_len"], out["response_mask"]
        for row, m in zip(out["tokens"][:, P:].tolist(), mask.sum(1).tolist()):
            texts.append(tok.decode(row[:m]))
            lengths.append(m)
        if ref is not None:
            with torch.no_grad():  # logits at P-1+j predict response token j
                logits = model(out["tokens"], out["attention_mask"])[:, P - 1:-1]
                ref_logits = ref(out["tokens"], out["attention_mask"])[:, P - 1:-1]
                kl = kernels.kl(logits, ref_logits, temperature if temperature > 0 else 1.0)
            kls += (kl * mask).sum(1).tolist()
    return texts, lengths, kls

def task_report(prompts, responses, lengths=None, kls=None):
    """The numbers every stage prints on the built-in task: mean gold score, fraction that parse
    (grammatical and ended), fraction ended, mean response length in tokens, mean sequence KL estimate."""
    n = max(1, len(prompts))
    rep = dict(gold=sum(gold(p, r) for p, r in zip(prompts, responses)) / n,
               parse=sum(parses(p, r) for p, r in zip(prompts, responses)) / n,
               ended=sum(r.endswith(EOT_TEXT) for r in responses) / n)
    if lengths:
        rep["response_len"] = sum(lengths) / n
    if kls:
        rep["kl"] = sum(kls) / n
    return rep
