"""
rewards.py (goldRLHF): what an RL stage optimises, read alike by ppo.py, grpo.py, dpo.py --online and sample.py:
- reward functions `fn(prompts, responses) -> list[float]` (a response ends with "<|endoftext|>" if it stopped):
  gold, format, length, or yours from a file (grpo.py --reward_fns=my_reward.py:score):
      def score(prompts, responses): return [1.0 if "great" in r else 0.0 for r in responses]
- trained reward models (reward.py) as one RewardModels: gain * raw + bias, aspects summed with weights, each
  possibly an ensemble (RewardEnsemble); and the AI judge as the reward (judge_reward: "direct" RLAIF)
"""
import math
import os
import types
import zlib
from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn

import common
import data
import labelers
import task
from configurator import UserError
from data import EOT_TEXT
from model import GPT, GPTConfig, disable_dropout, gather_last, score_sequences


# ----------------------------------------------------------------------------- reward functions
def gold_reward(prompts, responses):
    """The built-in task's hidden scorer as a verifiable reward (task.gold), about [-2, 1]."""
    return [task.gold(p, r) for p, r in zip(prompts, responses)]


def format_reward(prompts, responses):
    """1 if every sentence is in the grammar and the response ended, else 0."""
    return [float(task.parses(p, r)) for p, r in zip(prompts, responses)]


def length_reward(prompts, responses):
    """Response length in words / 10 (weight > 0 favours long answers, < 0 short ones)."""
    return [len(r.replace(EOT_TEXT, "").split()) / 10 for r in responses]


def aspect_reward(name):
    """One of gold's parts (task.aspects) as a reward: 'gold/<aspect>', e.g. for GDPO (grpo.py --reward_agg)."""
    return lambda prompts, responses: [task.aspects(p, r)[name] for p, r in zip(prompts, responses)]


BUILTIN_REWARDS = {"gold": gold_reward, "format": format_reward, "length": length_reward,
                   **{f"gold/{a}": aspect_reward(a) for a in task.ASPECTS}}
TASK_ONLY = ("gold", "format", *(f"gold/{a}" for a in task.ASPECTS))  # the built-in task's scorers: on other
# prompts they score nothing of yours


def load_rewards(spec, builtins=BUILTIN_REWARDS):
    """'gold:1.0,my.py:fn:0.5' -> [(name, fn, weight)]: name[:weight] of `builtins` or file.py:function[:weight]."""
    out = []
    for entry in [e.strip() for e in spec.split(",") if e.strip()]:
        parts = entry.split(":")
        weight = 1.0
        if len(parts) > 1 and parts[-1] and parts[-1][0] in "+-.0123456789":
            try:
                weight = float(parts[-1])
            except ValueError:
                raise UserError(f"--reward_fns entry {entry!r}: weight {parts[-1]!r} is not a number") from None
            parts = parts[:-1]
        if parts[0].endswith(".py"):
            if len(parts) != 2:
                raise UserError(f"--reward_fns entry {entry!r}: write a file's function as file.py:function[:weight]")
            path, fn_name = parts
            source = data.read_text(path, "reward function file", f"check --reward_fns entry {entry!r}")
            try:
                code = compile(source, path, "exec")
            except (SyntaxError, ValueError) as e:  # ValueError: a null byte
                raise UserError(f"the reward function file does not parse ({getattr(e, 'msg', e)})",
                                f"{path}:{getattr(e, 'lineno', None) or 1}") from None
            module = types.ModuleType(os.path.basename(path)[:-3])
            module.__file__ = path
            exec(code, module.__dict__)  # as an import would, but a bad file is one line, not a traceback
            fn = getattr(module, fn_name, None)
            if not callable(fn):
                raise UserError(f"--reward_fns entry {entry!r}: {path} has no function {fn_name!r}")
            out.append((f"{os.path.basename(path)[:-3]}.{fn_name}", fn, weight))
        elif len(parts) == 1 and parts[0] in builtins:
            out.append((parts[0], builtins[parts[0]], weight))
        else:
            raise UserError(f"--reward_fns entry {entry!r}: unknown reward; built in: {', '.join(builtins)}, "
                             f"or your own as file.py:function[:weight]")
    if not out:
        raise UserError("--reward_fns is empty: name at least one reward, e.g. --reward_fns=gold")
    return out


def score(scorers, prompts, responses, token_ids=None):
    """The weighted sum (len(responses),) of `scorers` (load_rewards), each one's scores; token_ids go to 'rm'."""
    each = {}
    for name, fn, _ in scorers:
        r = fn(prompts, responses, token_ids=token_ids) if name == "rm" and token_ids else fn(prompts, responses)
        r = [float(x) for x in r]
        bad = [x for x in r if not math.isfinite(x)]
        if len(r) != len(responses) or bad:
            raise UserError(f"reward {name!r} returned {len(r)} scores ({len(bad)} not finite, e.g. "
                             f"{bad[:1]}) for {len(responses)} responses: it must return one finite float per response")
        each[name] = torch.tensor(r)
    total = sum(w * each[name] for name, _, w in scorers)
    return total, each

# ----------------------------------------------------------------------------- trained reward models
def ensemble_reward(scores, objective="mean", coef=1.0):
    """scores (K, ...) -> (...): 'mean'; 'worst', the min over members (WCO, Coste et al. 2023); 'uncertainty',
    mean - coef * sample std (Eisenstein et al. 2023; Coste et al.'s UWO subtracts the variance)."""
    if objective == "mean":
        return scores.mean(0)
    if objective == "worst":
        return scores.min(0).values
    if objective == "uncertainty":
        return scores.mean(0) - coef * scores.std(0)
    raise ValueError(f"unknown ensemble objective {objective!r}: mean, worst or uncertainty")


class RewardEnsemble(nn.Module):
    """K reward models (reward.py --ensemble=K) as one: members normalised by their own gain and bias, combined
    by ensemble_reward: forward -> (B, T), read with gain 1, bias 0. member_scores (K, B, T)."""

    def __init__(self, members, gains, biases, objective="mean", coef=1.0):
        super().__init__()
        self.members, self.objective, self.coef, self.config = nn.ModuleList(members), objective, coef, members[0].config
        self.register_buffer("gain", torch.tensor(gains, dtype=torch.float).view(-1, 1, 1))
        self.register_buffer("bias", torch.tensor(biases, dtype=torch.float).view(-1, 1, 1))

    def member_scores(self, idx, attention_mask=None):
        return torch.stack([m(idx, attention_mask).float() for m in self.members]) * self.gain + self.bias

    def forward(self, idx, attention_mask=None):
        return ensemble_reward(self.member_scores(idx, attention_mask), self.objective, self.coef)

    def spread(self, idx, attention_mask=None):
        return self.member_scores(idx, attention_mask).std(0)

    def mean_score(self, idx, attention_mask=None):
        return self.member_scores(idx, attention_mask).mean(0)


@dataclass
class RewardModel:
    """One reward.py checkpoint: score = gain * raw + bias; same_vocab: it reads the policy's ids (else the text)."""
    model: nn.Module
    tok: data.Tokenizer
    gain: float
    bias: float
    weight: float = 1.0
    aspect: str | None = None
    same_vocab: bool = True
    labelled_p99: float | None = None  # the 99th percentile of its reward on its training responses (reward.py)


@dataclass
class RewardModels:
    """Sum over parts of weight * (gain * raw + bias). path: the first checkpoint (ppo.py's critic starts from it)."""
    parts: list
    path: str

    def __call__(self, tokens, attention_mask):
        """A padded batch: tokens, attention_mask (B, T) -> (B,)."""
        return sum(p.weight * (p.gain * gather_last(p.model(tokens, attention_mask).float(), attention_mask) + p.bias)
                   for p in self.parts)

    def score(self, seqs, pad_id, chunk=256):
        """Token-id lists (prompt + response, in the policy's vocabulary) -> (N,)."""
        return sum(p.weight * score_sequences(p.model, seqs, pad_id, p.gain, p.bias, chunk) for p in self.parts)

    @property
    def block_size(self):
        """The shortest context of the parts: what a scored prompt + response must fit in."""
        return min(p.model.config.block_size for p in self.parts)

    @property
    def has_ensemble(self):
        return any(isinstance(p.model, RewardEnsemble) for p in self.parts)

    @torch.no_grad()
    def ensemble_scores(self, seqs, pad_id, chunk=256):
        """Per sequence (N,): ensemble_std, the members' std (|weight|-summed), which should rise off the labelled
        distribution, and reward_mean, the reward under the members' mean; {} without an ensemble."""
        if not self.has_ensemble:
            return {}
        ens = [p for p in self.parts if isinstance(p.model, RewardEnsemble)]
        std = sum(abs(p.weight) * score_sequences(p.model, seqs, pad_id, chunk=chunk, forward=p.model.spread) for p in ens)
        mean = sum(p.weight * (score_sequences(p.model, seqs, pad_id, chunk=chunk, forward=p.model.mean_score)
                               if isinstance(p.model, RewardEnsemble) else score_sequences(p.model, seqs, pad_id, p.gain, p.bias, chunk))
                   for p in self.parts)
        return {"ensemble_std": std, "reward_mean": mean}

    def spread(self, tokens, attention_mask):
        """A padded batch -> (B,): the ensemble members' std at each last real token (|weight|-summed)."""
        return sum(abs(p.weight) * gather_last(p.model.spread(tokens, attention_mask), attention_mask)
                   for p in self.parts if isinstance(p.model, RewardEnsemble))

    def mean_score(self, tokens, attention_mask):
        """A padded batch -> (B,): the reward with each ensemble read as its members' mean (whatever objective)."""
        return sum(p.weight * (gather_last(p.model.mean_score(tokens, attention_mask), attention_mask)
                               if isinstance(p.model, RewardEnsemble) else
                               p.gain * gather_last(p.model(tokens, attention_mask).float(), attention_mask) + p.bias)
                   for p in self.parts)

    @property
    def labelled_p99(self):  # one model's top of the range it saw on labelled responses (several, or an old one: None)
        return self.parts[0].labelled_p99 if len(self.parts) == 1 else None

    def ensemble_stats(self, seqs, pad_id):
        return {k: v.mean().item() for k, v in self.ensemble_scores(seqs, pad_id).items()}

    def reward_fn(self, ctx, chunk=64):
        """grpo.py's 'rm' reward fn(prompts, responses, token_ids=None) -> list[float]: a same_vocab model scores
        the sampled ids, another the re-encoded text; each cut from the left to the model's context."""
        @torch.no_grad()
        def one(p, prompts, responses, token_ids):
            if not (token_ids and p.same_vocab):
                token_ids = [p.tok.encode(a + b, "reward model input") for a, b in zip(prompts, responses)]
            with ctx:
                return score_sequences(p.model, [s[-p.model.config.block_size:] for s in token_ids], p.tok.eot,
                                       p.gain, p.bias, chunk).tolist()

        def fn(prompts, responses, token_ids=None):
            scores = [one(p, prompts, responses, token_ids) for p in self.parts]
            return [sum(p.weight * x for p, x in zip(self.parts, xs)) for xs in zip(*scores)]
        return fn


def load_reward_model(path, vocab, device, same_vocab=True, objective="mean", coef=1.0):
    """A finished reward.py checkpoint as a RewardModel (weight 1); an ensemble one becomes a RewardEnsemble
    combined by `objective`. same_vocab=False: the model has its own tokenizer."""
    rm, rm_vocab, ckpt = common.load_frozen(path, vocab, "reward model", device, True, same_vocab)
    if "reward_gain" not in (ckpt or {}):
        raise UserError(f"{path}: no reward_gain/reward_bias in the checkpoint (not a finished reward.py run)",
                        fix="train it to the end with reward.py")
    norm = [ckpt["reward_gain"], ckpt["reward_bias"]] + [m[k] for m in ckpt.get("members") or [] for k in
                                                        ("reward_gain", "reward_bias")]
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in norm):  # NaN would score every response NaN
        raise UserError(f"{path}: the reward model's gain / bias are not finite numbers ({norm[:2]})",
                        fix="retrain it with reward.py (--n_norm >= 2)")
    if coef < 0:
        raise UserError(f"--uncertainty_coef={coef}: must be >= 0 (a negative one would pay for disagreement)")
    members = ckpt.get("members") or []
    if objective != "mean" and not members:
        raise UserError(f"{path}: --reward_ensemble={objective} needs an ensemble of K >= 2 reward models; "
                        f"this checkpoint holds one", fix="train one with reward.py --ensemble=4, or use "
                        "--reward_ensemble=mean")
    same = list(rm_vocab or []) == list(vocab or [])
    aspect = ckpt.get("aspect") or None
    p99 = (ckpt.get("labelled_scores") or {}).get("q99")  # (older checkpoints: none, and no ood monitor)
    if not members:
        return RewardModel(rm, data.Tokenizer(rm_vocab), ckpt["reward_gain"], ckpt["reward_bias"], 1.0, aspect, same, p99)
    models = [rm]
    for mem in members:
        m = GPT(GPTConfig(**{**ckpt["model_args"], "scalar_head": True}))
        m.load_state_dict(mem["model"])
        disable_dropout(m)
        models.append(m.to(device).eval().requires_grad_(False))
    gains = [ckpt["reward_gain"]] + [mem["reward_gain"] for mem in members]
    biases = [ckpt["reward_bias"]] + [mem["reward_bias"] for mem in members]
    ens = RewardEnsemble(models, gains, biases, objective, coef).to(device)
    return RewardModel(ens, data.Tokenizer(rm_vocab), 1.0, 0.0, 1.0, aspect, same, p99)


def load_reward_models(paths, vocab, device, aspect_weights="", same_vocab=True, objective="mean", coef=1.0):
    """RewardModels of `paths` (comma-separated, one per aspect), weighted by aspect_weights: '' (all 1),
    'name:w,...' (by aspect; every model named) or 'w,...' (in the order of paths)."""
    names = [p.strip() for p in paths.split(",") if p.strip()]
    parts = [load_reward_model(p, vocab, device, same_vocab, objective, coef) for p in names]
    entries = [e.strip() for e in aspect_weights.split(",") if e.strip()]
    if not entries:
        weights = [1.0] * len(parts)
    elif all(":" in e for e in entries):  # by aspect name
        by_name = {}
        for e in entries:
            k, _, w = e.partition(":")
            by_name[k.strip()] = _weight(w, e)
        have = [p.aspect for p in parts]
        for k in by_name:
            if k not in have:
                raise UserError(f"--aspect_weights: aspect {k!r} is not in the reward models (they rate "
                                f"{', '.join(str(a) for a in have)})", fix="name their aspects, or pass --reward_path=...")
        missing = [p for p, a in zip(names, have) if a not in by_name]
        if missing:
            raise UserError(f"--aspect_weights={aspect_weights!r} gives no weight to {missing[0]} (aspect "
                            f"{have[names.index(missing[0])]!r})", fix="give every reward model a weight (0 to drop it)")
        weights = [by_name[a] for a in have]
    else:
        weights = [_weight(e, e) for e in entries]
        if len(weights) != len(parts):
            raise UserError(f"--aspect_weights has {len(weights)} weights for {len(parts)} reward models",
                            fix="one weight per --reward_path entry, in order (or name:weight by aspect)")
    for p, w in zip(parts, weights):
        p.weight = w
    return RewardModels(parts, names[0] if names else paths)


def _weight(text, entry):
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--aspect_weights: {entry!r}: the weight is not a number") from None


# ----------------------------------------------------------------------------- the AI judge as the reward
def judge_reward(model, tok, principles, batch_size=64):
    """"Direct" RLAIF (Lee et al. 2023, d-RLAIF): fn(prompts, responses) -> each response's mean log-odds of beating
    the others of its group (consecutive equal prompts; both orders: G(G-1) judge prompts). One principle per
    group, by a hash of its text (a resumed run scores alike); a lone or unreadable response scores 0."""
    a_id, b_id = labelers.answer_ids(tok, "the judge")

    def fn(prompts, responses, token_ids=None):
        groups, start = [], 0
        for i in range(1, len(prompts) + 1):
            if i == len(prompts) or prompts[i] != prompts[start]:
                groups.append(range(start, i))
                start = i
        items, where = [], []
        for g in groups:
            pr = principles[zlib.crc32("".join(prompts[i] + responses[i] for i in g).encode()) % len(principles)]
            for i, j in combinations(g, 2):
                items.append((pr, prompts[i], responses[i], responses[j]))
                where.append((i, j))
        wins = [[] for _ in prompts]
        for (i, j), x in zip(where, labelers.judge_pairs(model, tok, items, a_id, b_id, batch_size)[0]):
            if x is not None:
                wins[i].append(x)
                wins[j].append(-x)
        return [sum(w) / len(w) if w else 0.0 for w in wins]
    return fn
