"""
monitors.py (goldRLHF): reward-hacking monitors that need no gold, on every rollout batch of ppo.py and grpo.py
(its training samples: no extra sampling), logged as monitor/<name> (NAMES below), and the early stop.
--stop_on=NAME>X (or <X, for one that falls) ends a run at the first batch whose line crosses X and keeps the
policy of the batch before, whose samples passed (stop_run); NAME is a monitor or any number the line logs
(kl>4: a fixed KL budget). hacking_onset is the ground truth they are measured against (it needs gold).
"""
import re
import time
from dataclasses import dataclass, field

import torch

import common
import labelers
from configurator import UserError

# ensemble_std   the reward-model ensemble's members' std on the samples (reward.py --ensemble=K): it should rise
#                off the labelled distribution (Coste et al. 2023; Eisenstein et al. 2023)
# audit_gap      the training reward model's mean score minus a held-out audit model's (--audit_path: reward.py
#                --half=2 beside a --half=1 training model, the labels split in two), both in SFT-normalised
#                units, so about 0 at the start: proxy against proxy
# ood_frac       the fraction of samples scored above the 99th percentile of the reward model's scores on its
#                own training responses (reward.py stores it): out of the range it has seen
# kl_rate        the least-squares slope of the sequence KL over the last KL_WINDOW batches (nats a batch)
# entropy_ratio  the policy's token entropy over its value at the first batch (collapse: it falls)
# len_ratio      the mean response length over its value at the first batch
# judge_agree    (grpo.py --monitor_judge) how often the AI judge prefers, of two responses to one prompt, the one
#                the reward model scores higher (up to 64 pairs within groups; ppo.py samples one response a
#                prompt, so it has no pair without extra sampling)
NAMES = ("ensemble_std", "audit_gap", "ood_frac", "kl_rate", "entropy_ratio", "len_ratio", "judge_agree")
KL_WINDOW = 5  # batches in kl_rate's slope


def load_aside(load, *args):
    """load(*args) without moving the global random state (a model's init would): monitors change no sample."""
    with torch.random.fork_rng(devices=[]):
        return load(*args)


# ----------------------------------------------------------------------------- the signals (pure functions)
def slope(ys):
    """Least-squares slope of ys against 0, 1, ..., len - 1 (0 for fewer than 2 points)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def ood_fraction(scores, hi):
    """The fraction of scores (N,) above hi."""
    return (scores > hi).float().mean().item()


def judge_agreement(judge_logodds, rm_a, rm_b):
    """How often the judge's log-odds (a beats b; None: unreadable) agree with the reward model's order of rm_a,
    rm_b (ties skipped); None when no pair counts."""
    votes = [(x > 0) == (a > b) for x, a, b in zip(judge_logodds, rm_a, rm_b) if x is not None and x != 0 and a != b]
    return sum(votes) / len(votes) if votes else None


def group_pairs(prompts, limit=64):
    """Pairs (i, i + 1) of consecutive equal prompts (grpo.py's groups), at most `limit`, spread over them."""
    pairs = [(i, i + 1) for i in range(len(prompts) - 1) if prompts[i] == prompts[i + 1]]
    return pairs[::max(1, len(pairs) // limit)][:limit]


@dataclass
class Tracker:
    """The first batch's entropy and length and the last KL_WINDOW KLs (in the checkpoint: a resume goes on alike)."""
    entropy0: float | None = None
    len0: float | None = None
    kls: list = field(default_factory=list)

    def state(self):
        return dict(entropy0=self.entropy0, len0=self.len0, kls=list(self.kls))


def timed(out, name, fn):
    """out[monitor/name] = fn(), and its cost in milliseconds as cost/name_ms (metrics.jsonl only)."""
    t = time.perf_counter()
    out[f"monitor/{name}"] = fn()  # (a .item() inside: the GPU has finished)
    out[f"cost/{name}_ms"] = 1000 * (time.perf_counter() - t)


def trend_monitors(tracker, kl, entropy, response_len):
    """kl_rate, entropy_ratio, len_ratio of this batch (floats: its sequence KL, token entropy, mean length)."""
    if tracker.entropy0 is None:
        tracker.entropy0, tracker.len0 = entropy, response_len
    tracker.kls = (tracker.kls + [kl])[-KL_WINDOW:]
    out = {}
    timed(out, "kl_rate", lambda: slope(tracker.kls))
    timed(out, "entropy_ratio", lambda: entropy / max(tracker.entropy0, 1e-8))
    timed(out, "len_ratio", lambda: response_len / max(tracker.len0, 1e-8))
    return out


@torch.no_grad()
def reward_monitors(rm, audit, tokens, attn, score):
    """ensemble_std, audit_gap, ood_frac of a padded batch (tokens, attn (B, T); score (B,): rm's), where they apply."""
    out = {}
    if rm is None:
        return out
    if rm.has_ensemble:
        timed(out, "ensemble_std", lambda: rm.spread(tokens, attn).mean().item())
    if audit is not None:
        timed(out, "audit_gap", lambda: (score.float() - audit(tokens, attn).float()).mean().item())
    hi = rm.labelled_p99
    if hi is not None:  # (its range is of the members' mean: the reward itself, unless another objective reads them)
        mean = all(getattr(p.model, "objective", "mean") == "mean" for p in rm.parts)
        timed(out, "ood_frac", lambda: ood_fraction(score if mean else rm.mean_score(tokens, attn), hi))
    return out


@torch.no_grad()
def judge_monitor(judge, prompts, texts, scores, limit=64):
    """judge_agree of a batch of groups (consecutive equal prompts): judge = labelers.load_judge's five, its first
    principle asked; scores: the reward model's, one per response."""
    model, tok, a_id, b_id, principles = judge
    pairs = group_pairs(prompts, limit)
    items = [(principles[0], prompts[i], texts[i], texts[j]) for i, j in pairs]
    out = {}
    timed(out, "judge_agree", lambda: judge_agreement(labelers.judge_pairs(model, tok, items, a_id, b_id)[0],
                                                      [scores[i] for i, _ in pairs], [scores[j] for _, j in pairs]))
    return out if out["monitor/judge_agree"] is not None else {}


def batch_monitors(tracker, rm, audit, tokens, attn, score, kl, entropy, response_len, judge=None, prompts=(),
                   texts=()):
    """Every monitor a run has, on one rollout batch: reward_monitors, trend_monitors, judge_monitor (a judge)."""
    out = {**reward_monitors(rm, audit, tokens, attn, score), **trend_monitors(tracker, kl, entropy, response_len)}
    return {**out, **(judge_monitor(judge, prompts, texts, score.tolist()) if judge is not None else {})}


def available(rm, audit, judge=False):
    """The monitor keys a run with these models logs."""
    keys = {"monitor/kl_rate", "monitor/entropy_ratio", "monitor/len_ratio"} | ({"monitor/judge_agree"} if judge else set())
    if rm is not None:
        keys |= ({"monitor/ensemble_std"} if rm.has_ensemble else set()) | ({"monitor/audit_gap"} if audit else set())
        keys |= {"monitor/ood_frac"} if rm.labelled_p99 is not None else set()
    return keys


# ----------------------------------------------------------------------------- the early stop
def parse_stop(spec):
    """'' -> None; 'NAME>X' or 'NAME<X' -> (key, op, X), key as logged (a monitor's name gets 'monitor/');
    anything else is one line naming the flag and its form."""
    if not spec:
        return None
    m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_/]*)\s*([<>])\s*([-+0-9.eE]+)\s*", spec)
    try:
        threshold = float(m.group(3)) if m else None
    except ValueError:
        threshold = None
    if threshold is None:
        raise UserError(f"--stop_on={spec!r}: expected NAME>THRESHOLD or NAME<THRESHOLD, a number after the sign",
                        fix="e.g. --stop_on=audit_gap>0.5, --stop_on=entropy_ratio<0.5 or --stop_on=kl>4")
    name = m.group(1)
    key = f"monitor/{name}" if name in NAMES else name
    return key, m.group(2), threshold


def check_stop(stop, rm, audit, judge, logged):
    """Refuse, before any step, a --stop_on this run never logs (its monitors, or the stage's `logged` keys)."""
    keys = available(rm, audit, judge) | set(logged)
    if stop and stop[0] not in keys:
        raise UserError(f"--stop_on: this run does not log {stop[0]!r}", fix="it logs " + ", ".join(sorted(keys)))


def alarm(stop, line, rt=None):
    """Does the batch's line cross --stop_on's threshold? (DDP: rank 0's line decides for every rank.)"""
    x = None if stop is None else line.get(stop[0])
    hit = x is not None and (x > stop[2] if stop[1] == ">" else x < stop[2])
    if rt is not None and rt.ddp:
        flag = torch.tensor(float(hit), device=rt.device)
        torch.distributed.broadcast(flag, 0)
        hit = bool(flag.item())
    return hit


def stop_run(out_dir, rt, kept, stop, iter_num, line=None):
    """End a run at an alarm (`line`: its batch's, logged first): ckpt.pt becomes kept[0], the snapshot before the
    alarm's batch (kept: the last two), atomically; one snapshot (the first batch alarmed): nothing written."""
    if line is not None:
        common.log_metrics(rt.metrics_path, {"iter": iter_num, **line}, rt.master)
    kept = kept[0] if len(kept) == 2 else None
    if kept is not None:
        common.save_snapshot(out_dir, rt, kept)
    if rt.master:
        rule = f"{stop[0]} {stop[1]} {stop[2]:g}"
        common.log_metrics(rt.metrics_path, {"iter": iter_num, "stopped_on": rule,
                                             "kept_iter": None if kept is None else kept["iter_num"]})
        print(f"stopped: the batch logged at iter {iter_num} (sampled by the policy of iteration {iter_num - 1}) has "
              f"{rule}; " + (f"{out_dir}/ckpt.pt is the policy of iteration {kept['iter_num']}, whose batch passed"
                             if kept and kept["iter_num"] else "the one before it is the SFT model: nothing saved"))


# ----------------------------------------------------------------------------- the ground truth (needs gold)
def hacking_onset(gold, proxy, drop=0.1, patience=2):
    """The index of the first log after which gold stays more than `drop` below its running best for at least
    `patience` consecutive logs while the proxy (the reward model's score) is above its value at that best
    (issue 35's rule); None if no such run of logs. gold, proxy: one number per log."""
    best, at, streak = float("-inf"), 0, 0
    for t, (g, r) in enumerate(zip(gold, proxy)):
        if g > best:
            best, at = g, t
        streak = streak + 1 if g < best - drop and r > proxy[at] else 0
        if streak >= patience:
            return t - patience + 1
    return None
