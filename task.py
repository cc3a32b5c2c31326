"""
task.py (goldRLHF): the built-in task, "reviews", and its hidden gold scorer. A prompt opens a review ("I went
to the cafe with my family."), the model continues in a tiny grammar (" The coffee was very good. I hated the
cake. I would go again.<|endoftext|>"). gold(prompt, response) plays the human, who likes positive, on-topic,
grammatical, short, finished reviews: a training signal only through the simulated labelers (labelers.py) and
as grpo.py's verifiable reward. Every stage reports it on held-out prompts (`report`).
"""
import math
import random
import re

from data import EOT, EOT_TEXT, Tokenizer


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

def prompts(split):
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

def demos(n, seed=0, split="train"):
    """n demonstrations (prompt, completion): 1-3 sentences of random sentiment, then <|endoftext|>."""
    rng = random.Random(seed)
    pool = prompts(split)
    out = []
    for _ in range(n):
        p = rng.choice(pool)
        place = p.split()[4].rstrip(".")
        sentences, k = [], rng.randint(1, 3)
        while len(sentences) < k:
            s = _sentence(rng, place)
            sentences += [s] if s not in sentences else []  # people don't repeat themselves
        out.append((p, " " + " ".join(sentences) + EOT_TEXT))
    return out

def vocab(tok=None):
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

# The aspects a person can rate separately (the tutorials' "helpfulness, realism, safety", Likert 1-5 per
# criterion): gold is exactly their sum, so weighting them differently asks for different reviews.
ASPECTS = {"opinion": (-1.0, 1.0), "recommendation": (-1.0, 1.0), "fluency": (-1.0, 0.0),
           "brevity": (-1.0, 0.0)}  # name: (worst, best) value


def aspects(prompt, response):
    """gold's parts (their sum is gold), each over sentences / n: opinion (on-topic sentiment), recommendation
    ("I would [not] go again"), fluency (minus the share unparsed or repeated), brevity (gold's penalties)."""
    values, ended = parse(prompt, response)
    n = max(1, len(values))
    text = response[:response.index(EOT_TEXT)] if EOT_TEXT in response else response
    again = [s.strip() in AGAIN for s in text.split(".")][:len(values)]
    return dict(opinion=sum(v for v, a in zip(values, again) if v is not None and not a) / n,
                recommendation=sum(v for v, a in zip(values, again) if v is not None and a) / n,
                fluency=-(sum(v is None for v in values) / n if values else 1.0),
                brevity=-(0.0 if ended else 0.5) - 0.25 * max(0, len(values) - 4))


def parses(prompt, response):
    """True if every sentence is in the grammar (on or off topic) and the response ended."""
    values, ended = parse(prompt, response)
    return ended and bool(values) and all(v is not None for v in values)

ACCEPT_THRESHOLD = 0.5  # above the SFT model's typical review (RESULTS.md, "Thumbs up / down")
ACCEPT_NOISE = 0.3


def accept_probability(prompt, response, threshold=ACCEPT_THRESHOLD, noise=ACCEPT_NOISE):
    """P(thumbs up) = P(gold + N(0, noise^2) > threshold) = Phi((gold - threshold) / noise)."""
    return 0.5 * (1 + math.erf((gold(prompt, response) - threshold) / (noise * math.sqrt(2))))


def report(prompts, responses, lengths=None, kls=None):
    """Every stage's eval on the task, means over responses: gold, accept_rate (expected thumbs up), parse
    (grammatical and ended), ended, gold/<aspect> (`aspects`), response_len (tokens), kl (sequence KL)."""
    n = max(1, len(prompts))
    rep = dict(gold=sum(gold(p, r) for p, r in zip(prompts, responses)) / n,
               accept_rate=sum(accept_probability(p, r) for p, r in zip(prompts, responses)) / n,
               parse=sum(parses(p, r) for p, r in zip(prompts, responses)) / n,
               ended=sum(r.endswith(EOT_TEXT) for r in responses) / n)
    for name in ASPECTS:
        rep[f"gold/{name}"] = sum(aspects(p, r)[name] for p, r in zip(prompts, responses)) / n
    if lengths:
        rep["response_len"] = sum(lengths) / n
    if kls:
        rep["kl"] = sum(kls) / n
    return rep

# Principles (RLAIF; Bai et al. 2022, "Constitutional AI"): one line tells an AI judge what to prefer (rlaif.py);
# here each has the score the simulated people label by under it, so changing it changes which review wins.
def _words(response):
    return len(response.replace(EOT_TEXT, "").split())


PRINCIPLES = {
    "Prefer the better review.": gold,  # the hidden human's own taste
    "Prefer the more positive review.": lambda p, r: (lambda a: a["opinion"] + a["recommendation"])(aspects(p, r)),
    "Prefer the shorter review.": lambda p, r: -_words(r) / 10 - (0.0 if r.endswith(EOT_TEXT) else 1.0),
    "Prefer the review that would go again.": lambda p, r: aspects(p, r)["recommendation"],
}  # (not fluency: the SFT model's samples almost all parse, so under it nearly every pair is a coin flip)
DEFAULT_PRINCIPLE = "Prefer the better review."  # what a judge is told when no principles file is given
