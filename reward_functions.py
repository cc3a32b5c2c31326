"""
reward_functions.py (goldRLHF): the rewards grpo.py optimises, each a plain Python function
`fn(prompts, responses) -> list[float]`, one number per response (responses are the decoded texts and
end with "<|endoftext|>" when the model stopped).

Built in: gold (task.gold, the built-in task's verifiable reward), format (1 if the response is
grammatical and ended), length (words / 10), and rm, the trained reward model (`reward_model` below:
normalised with the gain and bias reward.py stored, scoring the sampled token ids). grpo.py's
--reward_fns is a comma-separated list of `name[:weight]` or `file.py:function[:weight]` (`load_rewards`);
the reward of a response is the weighted sum (`score`). A file is imported as is, so your function
needs no change to the project:

    # my_reward.py
    def score(prompts, responses):
        return [1.0 if "great" in r else 0.0 for r in responses]
"""
import importlib.util
import math
import os

import torch

import task
from configurator import MissingFile, UserError
from data import EOT_TEXT
from model import score_sequences

def gold_reward(prompts, responses):
    """The built-in task's hidden scorer as a verifiable reward (task.gold), about [-2, 1]."""
    return [task.gold(p, r) for p, r in zip(prompts, responses)]


def format_reward(prompts, responses):
    """1 if every sentence is in the grammar and the response ended, else 0."""
    return [float(task.parses(p, r)) for p, r in zip(prompts, responses)]


def length_reward(prompts, responses):
    """Response length in words / 10 (weight > 0 favours long answers, < 0 short ones)."""
    return [len(r.replace(EOT_TEXT, "").split()) / 10 for r in responses]


BUILTIN_REWARDS = {"gold": gold_reward, "format": format_reward, "length": length_reward}


def load_rewards(spec, builtins=BUILTIN_REWARDS):
    """'gold:1.0,my.py:fn:0.5' -> [(name, fn, weight)]. An entry is name[:weight] (a key of `builtins`)
    or file.py:function[:weight] (imported from the file; the path is relative to the working dir)."""
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
            if not os.path.exists(path):
                raise MissingFile(f"--reward_fns entry {entry!r}: no file {path}")
            spec_ = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)
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
    """Run every reward function of `scorers` (load_rewards' list); returns the weighted sum
    (len(responses),) and each function's scores. token_ids (the sampled prompt + response ids) go to the
    reward model only: see reward_model."""
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


def reward_model(rm, rm_tok, gain, bias, same_vocab, ctx, chunk=64):
    """The 'rm' reward: the reward model's score of prompt + response (at its last token), normalised with
    the gain and bias reward.py stored so that SFT samples score mean 0, std 1. Given the sampled token_ids
    (and a shared vocabulary) it scores exactly those; otherwise it re-encodes the text with rm_tok."""
    @torch.no_grad()
    def rm_reward(prompts, responses, token_ids=None):
        if not (token_ids and same_vocab):
            token_ids = [rm_tok.encode(p + r, "reward model input") for p, r in zip(prompts, responses)]
        with ctx:
            return score_sequences(rm, [s[-rm.config.block_size:] for s in token_ids], rm_tok.eot, gain, bias,
                                   chunk).tolist()
    return rm_reward
