"""
rlaif.py (goldRLHF): AI feedback, RLAIF (Bai et al. 2022, "Constitutional AI"; Lee et al. 2023, "RLAIF
vs. RLHF"). A language model, the judge, labels pairs of responses in place of people; what it prefers
is set by a *principle*, one line of text, so changing the behaviour asked for is editing a file.

    python rlaif.py --mode=demos --out_dir=out/judge_demos    # 1. people judge a small budget under every principle
    python sft.py --data_path=out/judge_demos/judge_demos.jsonl --init_from=out/sft/ckpt.pt \
                  --compact_vocab=True --block_size=160 --max_iters=2000 --out_dir=out/judge   # 2. the judge
    python rlaif.py --judge=out/judge                          # 3. it labels fresh pairs -> out/rlaif/pairwise_*.jsonl
    python reward.py --data_path=out/rlaif                     # 4a. "distilled" RLAIF: a reward model on AI labels
    python grpo.py --reward_fns=judge --judge_path=out/judge   # 4b. "direct" RLAIF: the judge is the reward
    python rlaif.py --judge=gpt2 --pairs_path=prefs.jsonl      # a zero-shot GPT-2 judge re-labels your pairs

The judge reads (responses without <|endoftext|>; one that never ended gets " ..."):

    {principle}
    Review: {prompt}
    A:{response a}
    B:{response b}
    Better:

and prefers a by log P(" A") - log P(" B") at the next token. Language-model judges favour a position
(Zheng et al. 2023; Lee et al. 2023 average both orders), so every pair is judged in both orders and the
two log-odds averaged (swap_average); the report says how often the two orders pick different responses
(`position_bias`) and the mean pull toward slot A (`bias_A`, nats). As in Constitutional AI, a file of
several principles draws one at random per comparison. --principles names the file, one per line.

The built-in task has no judge to download, so step 1 makes the data a team would: simulated people
(feedback.py's Bradley-Terry labelers, on the principle's score in task.PRINCIPLES) judge a budget of
the SFT model's pairs under *every* principle of the file, the same pairs under each, so that only the
principle says which response wins; each choice is written in both orders (the answer flips with the
order, so a position prior cannot fit it); and they rate both responses 1-5 under the principle
(people_ratings). The ratings are not decoration: trained from scratch on choices alone (16,000 of
them) the judge learned length ("shorter") but stayed at chance on sentiment for 3,000 steps (no
feature tells it what "good" is until it sees which slot wins, and nothing says which slot to read
until it knows what is good); from the SFT model on choices alone it agreed with gold 0.64 after 1,000
steps, but alike under every principle; with the ratings, 0.79 under "better" (single runs, README).
A rating of one response is a direct signal of what is good. Step 2 starts the
judge from the SFT model (its vocabulary widened to the template's words, its context to 160 tokens:
sft.py --compact_vocab), as the papers' judges start from a pretrained model, with the loss on the
answer only. The first principle's pair labels are also written as pairwise files (human/): the
budget a reward model could use alone.
Report (printed, and out_dir/metrics.jsonl): how often the AI labels agree with gold, with the principle's
score, and with a fresh majority of simulated people under the same principle (beside how often two such
majorities agree with each other), position_bias, bias_A, and the pairs the judge could not read (a token
its compact vocabulary lacks, or longer than its context).
Departures: the papers' judges are large instruction-tuned models that may write a chain of thought first;
this one is a small model trained for the job and answers at once. One process (use python).
"""
import json
import math
import os
import random
import zlib
from itertools import combinations

import torch

import common
import data
import task
from common import log_metrics
from configurator import MissingFile, UserError, configure
from feedback import label_pair

# ----------------------------------------------------------------------------- config
out_dir = "out/rlaif"  # pairwise_{train,test}.jsonl (AI labels) or, --mode=demos, judge_demos.jsonl and human/
mode = "label"  # 'label': the judge labels pairs; 'demos': simulated people label pairs -> the judge's training data
judge = "out/judge"  # the judge: a checkpoint (sft.py on rlaif.py --mode=demos) or a GPT-2 name / HF directory
principles = ""  # a file of principles, one per line; '' = the built-in 'Prefer the better review.' (demos: all of task.PRINCIPLES)
policy_path = "out/sft/ckpt.pt"  # whose samples are compared (built-in task)
pairs_path = ""  # instead: your preference file (any of data.py's formats), re-labelled by the judge
n_pairs = 2000  # built-in task: train pairs to label (test pairs: a quarter as many, at most 500); demos: the human budget per principle
n_annotators = 3  # simulated people per item (demos, and the agreement report); the majority is kept
label_temperature = 0.25  # their Bradley-Terry noise, in units of the principle's score
max_new_tokens = 40  # response length limit when sampling
temperature = 1.0  # sampling temperature of the policy
batch_size = 64  # judge prompts per forward pass
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (sampling, the people, the principle drawn per pair)


# ----------------------------------------------------------------------------- the judge
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
    """Position-swap averaging. lo_ab (N,): the judge's log-odds that a beats b with a in slot A; lo_ba (N,):
    that b beats a with b in slot A. A judge with log-odds s + bias in either order gives lo_ab = s + bias,
    lo_ba = -s + bias. Returns (log-odds that a beats b, (lo_ab - lo_ba) / 2: the bias cancels; the shift
    toward slot A, (lo_ab + lo_ba) / 2; and whether the two orders pick the same response)."""
    return (lo_ab - lo_ba) / 2, (lo_ab + lo_ba) / 2, (lo_ab > 0) == (lo_ba < 0)


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
    """log P(" A") - log P(" B") at the token after each judge prompt. texts: N strings (each must fit the
    judge's context). Returns a float tensor (N,). Right-padded batches: a causal model's last real
    position never sees the padding."""
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
    """The judge on pairs, in both orders. items: (principle, prompt, a, b) tuples. Returns three lists, one
    entry per item: the swap-averaged log-odds that a beats b, the pull toward slot A, and whether the two
    orders agree; each None where the judge cannot read the pair (a token its compact vocabulary lacks, or
    longer than its context)."""
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
    avg, shift, same = swap_average(lo[0::2], lo[1::2])
    return tuple([None if k is None else x[k].item() for k in keep] for x in (avg, shift, same))


def judge_reward(model, tok, principles, batch_size=64):
    """"Direct" RLAIF (Lee et al. 2023, d-RLAIF): the judge itself is the reward, no reward model between.
    Returns fn(prompts, responses) -> list of floats for grpo.py: consecutive responses to the same prompt
    form a group, every response is compared with every other of its group (judge_pairs: both orders), and
    its reward is its mean log-odds of winning (a round robin: G(G-1) judge prompts per group of G; the
    log-odds that b beats a are minus those that a beats b). One principle per group, picked by a hash of
    its text (not a random draw: a resumed run scores alike). A lone response, or one the judge cannot
    read, scores 0."""
    a_id, b_id = answer_ids(tok, "the judge")

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
        for (i, j), x in zip(where, judge_pairs(model, tok, items, a_id, b_id, batch_size)[0]):
            if x is not None:
                wins[i].append(x)
                wins[j].append(-x)
        return [sum(w) / len(w) if w else 0.0 for w in wins]
    return fn


def load_judge(path, principles_path, device, builtin=False):
    """The judge (a checkpoint or GPT-2) frozen on `device`, its tokenizer, the ids of " A" and " B", and
    its principles (read_principles). What rlaif.py, dpo.py --labeler=ai and grpo.py's 'judge' reward load."""
    model, vocab, _ = common.load_frozen(path, None, "judge", device, same_vocab=False)
    tok = data.Tokenizer(vocab)
    a_id, b_id = answer_ids(tok, path)
    return model, tok, a_id, b_id, read_principles(principles_path, tok, model.config.block_size, builtin)


def read_principles(path, tok, block_size, builtin=False, default=(task.DEFAULT_PRINCIPLE,)):
    """The principles file: one per line, blank lines and lines starting with '#' skipped ('': `default`).
    Each must be encodable by the judge (tok; None: not checked) and leave room in its context; on the
    built-in task (builtin=True) each must be one of task.PRINCIPLES, since the simulated people need its score."""
    if not path:
        return list(default)
    if not os.path.isfile(path):
        raise MissingFile(f"{path}: no principles file here", fix="write one principle per line")
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
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


def people_vote(principle, prompt, a, b, rng, n=3, temperature=0.25):
    """A majority of n simulated people labelling a vs b under a built-in principle (True: a wins; a tie
    of votes: a coin)."""
    score = task.PRINCIPLES[principle]
    s_a, s_b = score(prompt, a), score(prompt, b)
    votes = sum(label_pair(s_a, s_b, rng, temperature) for _ in range(n))
    return 2 * votes > n or (2 * votes == n and rng.random() < 0.5)


def people_ratings(principle, items, rng, noise=0.25):
    """1-5 ratings of responses (items: (prompt, response) pairs) under a built-in principle, as people who
    have seen them all would give: each response's score plus Gaussian noise (noise x the scores' std), then
    cut at the quintiles of those noisy scores, so each rating is used about equally whatever the
    principle's units."""
    scores = [task.PRINCIPLES[principle](p, r) for p, r in items]
    mean = sum(scores) / max(1, len(scores))
    sd = (sum((x - mean) ** 2 for x in scores) / max(1, len(scores))) ** 0.5 or 1.0
    noisy = [x + rng.gauss(0, noise * sd) for x in scores]
    q = sorted(noisy)
    cuts = [q[len(q) * k // 5] for k in range(1, 5)]
    return [1 + sum(x > c for c in cuts) for x in noisy]


def n_test_pairs(n):
    """Held-out pairs for n train pairs: a quarter as many, at most 500 (enough to measure agreement)."""
    return max(1, min(n // 4, 500))


def sample_pairs(policy, tok, split, n, ctx, max_new_tokens, temperature):
    """n pairs (prompt, a, b) of distinct responses sampled from the policy for the split's prompts (two per
    prompt, cycling through the prompts until n distinct pairs are found)."""
    out, prompts = [], task.prompts(split)
    for _ in range(20 + 2 * math.ceil(n / len(prompts))):  # rounds; a collapsed policy rarely writes two different responses
        with torch.no_grad(), ctx:
            texts, _, _ = data.sample_responses(policy, tok, [p for p in prompts for _ in range(2)], max_new_tokens,
                                                temperature, batch_size=256)
        out += [(p, a, b) for p, a, b in zip(prompts, texts[::2], texts[1::2]) if a != b]
        if len(out) >= n:
            return out[:n]
    raise UserError(f"the policy wrote only {len(out)} of {n} pairs of different responses in as many rounds", policy_path,
                    "ask for fewer --n_pairs")


# ----------------------------------------------------------------------------- the stage
if __name__ == "__main__":
    config = configure(globals(), choices=dict(mode=("label", "demos")))
    if "RANK" in os.environ:
        raise UserError("rlaif.py runs in one process", fix="run it with python, not torchrun")
    if n_pairs < 1 or n_annotators < 1:
        raise UserError(f"--n_pairs={n_pairs}, --n_annotators={n_annotators}: both must be at least 1")
    rt = common.setup(device, dtype, seed, out_dir)
    rng = random.Random(seed)
    builtin = not pairs_path

    if mode == "demos":  # -------------------------------------------- people label; the judge's training data
        if not builtin:
            raise UserError("--mode=demos makes the built-in task's judge", fix="drop --pairs_path")
        plist = read_principles(principles, None, 10 ** 6, builtin=True, default=tuple(task.PRINCIPLES))
        policy, vocab, _ = common.load_model(policy_path)
        tok = data.Tokenizer(vocab)
        policy.to(rt.device).eval()
        rows, human = [], {}
        for split, n in (("train", n_pairs), ("test", n_test_pairs(n_pairs))):
            pairs = sample_pairs(policy, tok, split, n, rt.ctx, max_new_tokens, temperature)
            human[split] = []
            for k, principle in enumerate(plist):
                for p, a, b in pairs:
                    a_wins = people_vote(principle, p, a, b, rng, n_annotators, label_temperature)
                    if split == "train":  # both orders: the answer names the slot of the winner
                        rows += [dict(prompt=judge_text(principle, p, a, b), completion=" A" if a_wins else " B"),
                                 dict(prompt=judge_text(principle, p, b, a), completion=" B" if a_wins else " A")]
                    if k == 0:
                        c, r = (a, b) if a_wins else (b, a)
                        human[split].append(dict(prompt=p, chosen=c, rejected=r))
                if split == "train":  # and both responses rated 1-5 (what teaches the judge what is good: see above)
                    items = [(p, x) for p, a, b in pairs for x in (a, b)]
                    rows += [dict(prompt=rating_text(principle, p, x), completion=f" {stars}")
                             for (p, x), stars in zip(items, people_ratings(principle, items, rng))]
        random.Random(seed + 1).shuffle(rows)
        data.write_jsonl(os.path.join(out_dir, "judge_demos.jsonl"), rows)
        for split, r in human.items():
            data.write_jsonl(os.path.join(out_dir, "human", f"pairwise_{split}.jsonl"), r)
        log_metrics(rt.metrics_path, {"iter": 0, "n_demos": len(rows), "n_human_pairs": n_pairs * len(plist),
                                      "n_human_ratings": 2 * n_pairs * len(plist), "n_principles": len(plist)})
        print(f"wrote {len(rows)} judgements ({n_pairs} pairs x {len(plist)} principles x 2 orders, and both "
              f"responses of each rated) to {out_dir}/judge_demos.jsonl, and the first principle's pair labels "
              f"to {out_dir}/human/")
        raise SystemExit(0)

    # ------------------------------------------------------------------------- the judge labels
    jmodel, jtok, a_id, b_id, plist = load_judge(judge, principles, rt.device, builtin)
    if builtin:
        policy, vocab, _ = common.load_model(policy_path)
        policy.to(rt.device).eval()
        splits = {s: sample_pairs(policy, data.Tokenizer(vocab), s, n, rt.ctx, max_new_tokens, temperature)
                  for s, n in (("train", n_pairs), ("test", n_test_pairs(n_pairs)))}
    else:  # your pairs: the judge re-labels them; agreement with your labels is reported
        splits = {"train": [(r["prompt"], r["chosen"], r["rejected"]) for r in data.load_preferences(pairs_path)]}
    report, mean = {}, lambda xs: sum(xs) / max(1, len(xs))
    for split, pairs in splits.items():
        drawn = [rng.choice(plist) for _ in pairs]  # Constitutional AI: a principle drawn per comparison
        lo_a, shift, same = judge_pairs(jmodel, jtok, [(pr, p, a, b) for (p, a, b), pr in zip(pairs, drawn)],
                                        a_id, b_id, batch_size)
        rows, right, right_p, agree_h, agree_hh = [], [], [], [], []
        for (p, a, b), pr, lo in zip(pairs, drawn, lo_a):
            if lo is None:
                continue
            a_wins = lo > 0 if lo != 0 else rng.random() < 0.5
            c, r = (a, b) if a_wins else (b, a)  # margin: |2 P(a > b) - 1|, as feedback.py's vote margin
            rows.append(dict(prompt=p, chosen=c, rejected=r, margin=round(abs(math.tanh(lo / 2)), 4), principle=pr))
            if builtin:
                g_a, g_b = task.gold(p, a), task.gold(p, b)
                s_a, s_b = task.PRINCIPLES[pr](p, a), task.PRINCIPLES[pr](p, b)
                right += [a_wins == (g_a > g_b)] if g_a != g_b else []
                right_p += [a_wins == (s_a > s_b)] if s_a != s_b else []
                h1 = people_vote(pr, p, a, b, rng, n_annotators, label_temperature)
                h2 = people_vote(pr, p, a, b, rng, n_annotators, label_temperature)
                agree_h.append(a_wins == h1)
                agree_hh.append(h1 == h2)
            else:
                agree_h.append(a_wins)  # the file's chosen is a
        data.write_jsonl(os.path.join(out_dir, f"pairwise_{split}.jsonl"), rows)
        read = [k for k, x in enumerate(lo_a) if x is not None]
        report.update({f"{split}/n_labels": len(rows), f"{split}/n_unreadable": len(pairs) - len(read),
                       f"{split}/position_bias": 1 - mean([same[k] for k in read]),
                       f"{split}/bias_A": mean([shift[k] for k in read])})
        if builtin:
            report.update({f"{split}/labels_acc_gold": mean(right), f"{split}/labels_acc_principle": mean(right_p),
                           f"{split}/agreement/humans": mean(agree_h), f"{split}/agreement/human_human": mean(agree_hh)})
        else:
            report[f"{split}/agreement/labels"] = mean(agree_h)
    log_metrics(rt.metrics_path, {"iter": 0, **report})
    with open(rt.metrics_path, "a") as f:
        f.write(json.dumps({"config": config}) + "\n")
    s = "test" if builtin else "train"
    print(f"wrote pairwise_{{{','.join(splits)}}}.jsonl to {out_dir}/: {report[f'{s}/n_labels']} {s} labels" +
          (f", agreeing with gold {report[f'{s}/labels_acc_gold']:.3f}, with the principle {report[f'{s}/labels_acc_principle']:.3f}, "
           f"with people {report[f'{s}/agreement/humans']:.3f} (people with people {report[f'{s}/agreement/human_human']:.3f})"
           if builtin else f", agreeing with the file's labels {report[f'{s}/agreement/labels']:.3f}") +
          f"; the two orders disagree on {report[f'{s}/position_bias']:.3f} of the pairs")
