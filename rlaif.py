"""
rlaif.py (goldRLHF): AI feedback, RLAIF (Bai et al. 2022, "Constitutional AI"; Lee et al. 2023, "RLAIF
vs. RLHF"). A language model, the judge, labels pairs of responses in place of people; what it prefers
is set by a *principle*, one line of text, so changing the behaviour asked for is editing a file.

    python rlaif.py --mode=demos --out_dir=out/judge_demos    # 1. people judge a small budget under every principle
    python sft.py --data_path=out/judge_demos/judge_demos.jsonl --init_from=out/sft/ckpt.pt \
                  --compact_vocab=True --block_size=160 --max_iters=2000 --lr=1e-3 --out_dir=out/judge  # 2. the judge
    python rlaif.py --judge=out/judge                          # 3. it labels fresh pairs -> out/rlaif/pairwise_*.jsonl
    python reward.py --data_path=out/rlaif                     # 4a. "distilled" RLAIF: a reward model on AI labels
    python grpo.py --reward_fns=judge --judge_path=out/judge   # 4b. "direct" RLAIF: the judge is the reward
    python rlaif.py --judge=gpt2 --pairs_path=prefs.jsonl      # a zero-shot GPT-2 judge re-labels your pairs

The judge (labelers.py) reads the principle, the review and responses A and B (judge_text) and prefers A by
log P(" A") - log P(" B"), both orders averaged against position bias (Zheng et al. 2023; Lee et al. 2023);
a file of principles (--principles) draws one per comparison, as in Constitutional AI.
The built-in task has no judge to download, so step 1 writes the data a team would: simulated people judge
SFT-sample pairs under every principle of task.PRINCIPLES (the same pairs, so only the principle says which
wins), each choice in both orders (no position prior fits), and rate both responses 1-5, because a rating
says directly what is good, which choices alone did not teach the judge (RESULTS.md, RLAIF); step 2 starts
it from the SFT model, as the papers' judges start pretrained. The first principle's pair labels also go to
human/: the budget a reward model could use alone.
Report (out_dir/metrics.jsonl): the AI labels' agreement with gold, with the principle and with a fresh
majority of people (beside two majorities' agreement), position_bias (how often the two orders disagree),
bias_A (the pull toward slot A, nats), unreadable pairs. Departures: the papers' judges are large
instruction-tuned models that may reason first; this one is small, trained for the job, and answers at once.
"""
import json
import math
import os
import random

import torch

import common
import data
import feedback_data
import task
from common import log_metrics
from configurator import UserError, configure
from labelers import judge_pairs, judge_text, label_pair, load_judge, rating_text, read_principles, soft_margin

# ----------------------------------------------------------------------------- config
out_dir = "out/rlaif"  # pairwise_{train,test}.jsonl (AI labels) or, --mode=demos, judge_demos.jsonl and human/
overwrite = False  # replace the labels and metrics.jsonl an earlier run left in out_dir (a fresh run refuses to)
mode = "label"  # 'label': the judge labels pairs; 'demos': simulated people label pairs -> the judge's training data
judge = "out/judge"  # the judge: a checkpoint (sft.py on rlaif.py --mode=demos) or a GPT-2 name / HF directory
principles = ""  # a file of principles, one per line; '' = the built-in 'Prefer the better review.' (demos: all of task.PRINCIPLES)
policy_path = "out/sft/ckpt.pt"  # whose samples are compared (built-in task)
pairs_path = ""  # instead: your preference file (any of feedback_data.py's formats), re-labelled by the judge
n_pairs = 2000  # built-in task: train pairs to label (test pairs: a quarter as many, at most 500); demos: the human budget per principle [> 0]
n_annotators = 3  # simulated people per item (demos, and the agreement report); the majority is kept [> 0]
label_temperature = 0.25  # their Bradley-Terry noise, in units of the principle's score [> 0]
max_new_tokens = 40  # response length limit when sampling [> 0]
temperature = 1.0  # sampling temperature of the policy [> 0]
batch_size = 64  # judge prompts per forward pass [> 0]
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (sampling, the people, the principle drawn per pair) [>= 0]


# ----------------------------------------------------------------------------- the judge's data
def people_vote(principle, prompt, a, b, rng, n=3, temperature=0.25):
    """A majority of n simulated people labelling a vs b under a built-in principle (True: a wins; a tie: a coin)."""
    score = task.PRINCIPLES[principle]
    s_a, s_b = score(prompt, a), score(prompt, b)
    votes = sum(label_pair(s_a, s_b, rng, temperature) for _ in range(n))
    return 2 * votes > n or (2 * votes == n and rng.random() < 0.5)


def people_ratings(principle, items, rng, noise=0.25):
    """1-5 ratings of (prompt, response) items: the principle's score plus noise x its std, cut at quintiles."""
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
    """n pairs (prompt, a, b) of distinct policy samples, two per prompt, cycling through the split's prompts."""
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
    writes = ["judge_demos.jsonl", "human/pairwise_train.jsonl", "human/pairwise_test.jsonl"] if mode == "demos" else \
        ["pairwise_train.jsonl"] + ([] if pairs_path else ["pairwise_test.jsonl"])
    rt = common.setup(device, dtype, seed, out_dir, config, ("policy_path", "principles", "pairs_path",
                                                           mode == "label" and "judge"), writes + ["metrics.jsonl"])
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
    ties = set()  # your rows that are ties: judged, but the file names no winner to agree with
    if builtin:
        policy, vocab, _ = common.load_model(policy_path)
        policy.to(rt.device).eval()
        splits = {s: sample_pairs(policy, data.Tokenizer(vocab), s, n, rt.ctx, max_new_tokens, temperature)
                  for s, n in (("train", n_pairs), ("test", n_test_pairs(n_pairs)))}
    else:  # your pairs: the judge re-labels them; agreement with your labels is reported
        rows = feedback_data.load_preferences(pairs_path)
        splits = {"train": [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]}
        ties = {k for k, r in enumerate(rows) if r.get("tie")}
        if ties:
            print(f"note: {len(ties)} of {len(rows)} rows are ties: the judge labels them, the agreement with the "
                  f"file's labels skips them (a tie names no winner)")
    report, mean = {}, lambda xs: sum(xs) / max(1, len(xs))
    for split, pairs in splits.items():
        drawn = [rng.choice(plist) for _ in pairs]  # Constitutional AI: a principle drawn per comparison
        lo_a, shift, same, p_a = judge_pairs(jmodel, jtok, [(pr, p, a, b) for (p, a, b), pr in zip(pairs, drawn)],
                                             a_id, b_id, batch_size)
        rows, right, right_p, agree_h, agree_hh = [], [], [], [], []
        for k, ((p, a, b), pr, lo, pa) in enumerate(zip(pairs, drawn, lo_a, p_a)):
            if lo is None:
                continue
            a_wins = lo > 0 if lo != 0 else rng.random() < 0.5
            c, r = (a, b) if a_wins else (b, a)  # margin: from the two orders' mean probability (Lee et al. 2023)
            rows.append(dict(prompt=p, chosen=c, rejected=r, margin=soft_margin(pa), principle=pr))
            if builtin:
                g_a, g_b = task.gold(p, a), task.gold(p, b)
                s_a, s_b = task.PRINCIPLES[pr](p, a), task.PRINCIPLES[pr](p, b)
                right += [a_wins == (g_a > g_b)] if g_a != g_b else []
                right_p += [a_wins == (s_a > s_b)] if s_a != s_b else []
                h1 = people_vote(pr, p, a, b, rng, n_annotators, label_temperature)
                h2 = people_vote(pr, p, a, b, rng, n_annotators, label_temperature)
                agree_h.append(a_wins == h1)
                agree_hh.append(h1 == h2)
            elif k not in ties:
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
            report[f"{split}/n_ties"] = len(ties)
            if agree_h:  # (every row a tie: the file names no winner to agree with)
                report[f"{split}/agreement/labels"] = mean(agree_h)
    log_metrics(rt.metrics_path, {"iter": 0, **report})
    with open(rt.metrics_path, "a") as f:
        f.write(json.dumps({"config": config}) + "\n")
    s = "test" if builtin else "train"
    print(f"wrote pairwise_{{{','.join(splits)}}}.jsonl to {out_dir}/: {report[f'{s}/n_labels']} {s} labels" +
          (f", agreeing with gold {report[f'{s}/labels_acc_gold']:.3f}, with the principle {report[f'{s}/labels_acc_principle']:.3f}, "
           f"with people {report[f'{s}/agreement/humans']:.3f} (people with people {report[f'{s}/agreement/human_human']:.3f})"
           if builtin else f", agreeing with the file's labels {report[f'{s}/agreement/labels']:.3f}" if agree_h else
           ", none with a winner in the file to agree with") + (f" ({len(ties)} ties skipped)" if ties else "") +
          f"; the two orders disagree on {report[f'{s}/position_bias']:.3f} of the pairs")
