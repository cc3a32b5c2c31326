"""
feedback.py (goldRLHF): collect human feedback, the stage between SFT and the reward model (Ouyang et al.
2022, step 2's data; Ziegler et al. 2019; Stiennon et al. 2020): sample K responses per prompt from a policy,
have people judge them with every kind of feedback, aggregate their votes (the majority; for pairs optionally
Dawid-Skene), audit the result, and write out_dir/{kind}_{train,test}.jsonl for reward.py and dpo.py.

    python feedback.py                                   # the SFT model's samples, 3 careful people per item
    python feedback.py --labelers=careful:0.6,noisy:0.1,verbose:0.1,adversarial:0.2 --n_labelers=10 \
                       --aggregate=dawid_skene           # a mixed pool, votes aggregated by Dawid-Skene
    python feedback.py --policy_path=out/ppo --anchor_path=out/sft/ckpt.pt   # a later policy vs the SFT model's

The people are simulated in labelers.py (noisy views of the hidden gold score); the file formats are in
feedback_data.py, beside load_feedback, which reads them. The report (printed, and out_dir/metrics.jsonl):
annotator agreement (raw, Fleiss' kappa, Krippendorff's alpha), the kept labels' agreement with gold, each
labeler type's true reliability beside Dawid-Skene's estimate, the preference audit (audit.py: cycles, the
best accuracy any scalar reward can reach), and how consistent repeated items' labels are. One process (use
python).
"""
import json
import os
import random
import time

import torch

import common
import data
import feedback_data
import task
from audit import audit, dawid_skene, fleiss_kappa, krippendorff_alpha, repeat_consistency
from common import log_metrics
from configurator import UserError, configure
from labelers import label_aspect_group, label_binary_group, label_group, make_pool

# ----------------------------------------------------------------------------- config
out_dir = "out/feedback"  # the feedback files and metrics.jsonl go here (reward.py's and dpo.py's data)
overwrite = False  # replace the feedback files and metrics.jsonl an earlier run left in out_dir (a fresh run refuses to)
policy_path = "out/sft/ckpt.pt"  # the policy whose samples people label (the SFT model; any checkpoint)
anchor_path = ""  # a second policy (e.g. the SFT model) writing the second half of each group: its samples are compared with the policy's
n_samples = 4  # K responses per prompt (InstructGPT: K = 4..9); each group is labelled with every kind [>= 2]
n_rounds = 4  # groups of K per train prompt (test prompts get half as many, at least 1) [> 0]
n_annotators = 3  # simulated people per item; the label is their majority vote (or --aggregate's) [> 0, <= n_labelers]
labelers = "careful:0.6,verbose:0.2,positive:0.2"  # the pool's labeler types and shares: careful, noisy, verbose (prefers longer), positive (prefers praise), adversarial (flips)
n_labelers = 5  # people in the pool: each pair is judged by n_annotators of them at random (all of them, if equal) [> 0]
noisy_scale = 4.0  # a noisy labeler's Bradley-Terry temperature, in units of a careful one's [> 0]
length_bonus = 0.1  # a verbose labeler's utility: gold + this per word of the response [>= 0]
positive_bonus = 0.3  # a positive labeler's utility: gold + this x the review's praise (the sum of its sentiments) [>= 0]
aggregate = "majority"  # pairwise votes -> label: 'majority' or 'dawid_skene' (EM over every labeler's confusion)
label_temperature = 0.25  # Bradley-Terry / Plackett-Luce noise of the labelers (gold-score units) [> 0]
tie_margin = 0.15  # labelers say "about equal" when gold scores are closer than this [>= 0]
likert_noise = 0.3  # std of the labelers' Gaussian noise on the gold score before rating 1-5 [>= 0]
max_new_tokens = 40  # response length limit when sampling [> 0]
temperature = 1.0  # sampling temperature of the policy [> 0]
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (sampling and the labelers) [>= 0]

ALL_KINDS = data.FEEDBACK_KINDS  # thumbs up / down and per-aspect ratings come from a second and a third labelling

# ----------------------------------------------------------------------------- collecting feedback
def collect(policy, tok, fb_dir, seed, n_samples, n_rounds, n_annotators, label_temperature, tie_margin,
            likert_noise, noisy, length_bonus, positive_bonus, max_new_tokens, temperature, ctx, pool=None, aggregate="majority",
            anchor=None):
    """n_rounds groups of n_samples policy samples per train prompt (test: half as many, at least 1), labelled
    with every kind by n_annotators simulated people (pairwise ones from `pool`); writes fb_dir, returns the
    report. aggregate: 'majority' or 'dawid_skene' (the pair's posterior; margin |2P - 1|). anchor: a second model
    writing the last n_samples // 2 of every group (a collapsed policy's equally bad samples are coin flips)."""
    # binary and aspect labels have their own generators, so the other kinds' labels do not depend on them
    t0, lab_rng, bin_rng, asp_rng = time.time(), random.Random(seed), random.Random(seed + 1), random.Random(seed + 2)
    report = {}
    for split, rounds in (("train", n_rounds), ("test", max(1, n_rounds // 2))):
        prompts = [p for p in task.prompts(split) for _ in range(rounds * n_samples)]
        with torch.no_grad(), ctx:
            texts, _, _ = data.sample_responses(policy, tok, prompts, max_new_tokens, temperature, batch_size=256)
            if anchor is not None:
                other, _, _ = data.sample_responses(anchor, tok, prompts, max_new_tokens, temperature, batch_size=256)
                texts = mix_groups(texts, other, n_samples)
        rows, agree = {k: [] for k in ALL_KINDS}, {k: [0, 0] for k in ALL_KINDS}
        for g in range(0, len(prompts), n_samples):
            r, a = label_group(prompts[g], texts[g:g + n_samples], lab_rng, n_annotators,
                               label_temperature, tie_margin, likert_noise, pool, noisy, length_bonus, positive_bonus)
            r["binary"], a["binary"] = label_binary_group(prompts[g], texts[g:g + n_samples], bin_rng, n_annotators)
            r["aspects"], a["aspects"] = label_aspect_group(prompts[g], texts[g:g + n_samples], asp_rng, n_annotators,
                                                            likert_noise)
            for k in ALL_KINDS:
                rows[k] += r[k]
                agree[k] = [agree[k][0] + a[k][0], agree[k][1] + a[k][1]]
        pairs = rows["pairwise"]
        mixed = pool is not None and len(set(pool)) > 1
        if aggregate == "dawid_skene" or mixed:
            post, conf, prior = dawid_skene([(n, w, int(v)) for n, row in enumerate(pairs) for w, v in row["_votes"]], 2)
        if aggregate == "dawid_skene":
            for n, row in enumerate(pairs):
                p_a = post[n][1]
                if p_a != 0.5:  # (exactly 0.5: the majority's coin stands)
                    row["chosen"], row["rejected"] = (row["_a"], row["_b"]) if p_a > 0.5 else (row["_b"], row["_a"])
                row["margin"] = round(abs(2 * p_a - 1), 4)
        for k in ALL_KINDS:
            data.write_jsonl(os.path.join(fb_dir, f"{k}_{split}.jsonl"), rows[k])
        right = [(a > b) == (row["chosen"] == row["_a"]) for row in pairs for a, b in [row["_gold"]] if a != b]
        report[f"{split}/labels_acc_gold"] = sum(right) / max(1, len(right))  # the kept labels against gold
        if split == "train":
            votes = [[int(v) for _, v in row["_votes"]] for row in pairs]
            report = {**report, "feedback_s": time.time() - t0, "n_responses": len(texts),
                      **{f"n_{k}": len(rows[k]) for k in ALL_KINDS},
                      "accept_share": sum(r["label"] for r in rows["binary"]) / max(1, len(rows["binary"])),
                      **{f"agreement/{k}": a / max(1, n) for k, (a, n) in agree.items()}}
            if n_annotators > 1:  # (one vote per item has no agreement to measure)
                report["agreement/fleiss_kappa"] = fleiss_kappa([[len(v) - sum(v), sum(v)] for v in votes])
                report["agreement/krippendorff_alpha"] = krippendorff_alpha(votes)
            for kind in sorted(set(pool)) if mixed else []:  # true vs estimated reliability, per type
                people = [w for w, t in enumerate(pool) if t == kind]
                right = [v == (row["_gold"][0] > row["_gold"][1]) for row in pairs if row["_gold"][0] != row["_gold"][1]
                         for w, v in row["_votes"] if pool[w] == kind]
                est = [sum(prior[c] * conf[w][c][c] for c in range(2)) for w in people if w in conf]
                report[f"reliability/{kind}"] = sum(right) / max(1, len(right))
                report[f"reliability/{kind}_dawid_skene"] = sum(est) / max(1, len(est))
    return report


def mix_groups(texts, other, n_samples):
    """texts (consecutive groups of n_samples) with each group's last n_samples // 2 from `other` (aligned)."""
    return [o if i % n_samples >= n_samples - n_samples // 2 else t for i, (t, o) in enumerate(zip(texts, other))]


# ----------------------------------------------------------------------------- the stage
if __name__ == "__main__":
    config = configure(globals(), choices=dict(aggregate=("majority", "dawid_skene")))
    pool = make_pool(labelers, n_labelers)
    if "RANK" in os.environ:
        raise UserError("feedback.py runs in one process (sampling takes seconds)", fix="run it with python, not torchrun")
    rt = common.setup(device, dtype, seed, out_dir, config, ("policy_path", "anchor_path"),
                      [f"{k}_{s}.jsonl" for k in ALL_KINDS for s in ("train", "test")] + ["metrics.jsonl"])
    policy, vocab, _ = common.load_model(policy_path)
    policy.to(rt.device).eval()
    tok = data.Tokenizer(vocab)
    anchor = common.load_frozen(anchor_path, vocab, "anchor", rt.device)[0] if anchor_path else None
    print(f"sampling {n_samples} responses per prompt, {n_rounds} rounds, from {policy_path}"
          f"{f' (the last {n_samples // 2} of each group from {anchor_path})' if anchor_path else ''}; "
          f"{n_annotators} of {n_labelers} people ({labelers}) per item, {aggregate}")
    report = collect(policy, tok, out_dir, seed, n_samples, n_rounds, n_annotators, label_temperature, tie_margin,
                     likert_noise, noisy_scale, length_bonus, positive_bonus, max_new_tokens, temperature, rt.ctx, pool,
                     aggregate, anchor)

    # the audit (audit.py) of the kept labels: intransitive cycles, and the best accuracy any scalar
    # reward can reach on them; then how consistent repeated items' ratings and thumbs are
    examples = []
    for split in ("train", "test"):
        items, _ = feedback_data.load_feedback(os.path.join(out_dir, f"pairwise_{split}.jsonl"), "pairwise")
        rep = audit(feedback_data.to_pairs(items, "pairwise"))
        report.update({f"{split}/audit_max_agreement": rep["max_agreement"], f"{split}/audit_exact": rep["exact"],
                       f"{split}/prompts_with_cycles": rep["prompts_with_cycles"],
                       f"{split}/n_prompts": len({it["prompt"] for it in items})})
        examples += rep["examples"] if split == "train" else []
    for kind in ("likert", "binary"):
        items, _ = feedback_data.load_feedback(os.path.join(out_dir, f"{kind}_train.jsonl"), kind)
        rc = repeat_consistency([((it["prompt"], it["texts"][0]), it["y"]) for it in items])
        report.update({f"repeats/{kind}_items": rc["n_repeated"], f"repeats/{kind}_agreement": rc["agreement"]})
    log_metrics(rt.metrics_path, {"iter": 0, **report})
    with open(rt.metrics_path, "a") as f:  # what ran, for whoever reads these files later
        f.write(json.dumps({"config": config}) + "\n")
    for p, cyc in examples[:2]:
        print(f"  a cycle in {p!r}: " + " > ".join(repr(t[:40]) for t in cyc) + f" > {cyc[0][:40]!r}")
    bound = report["train/audit_max_agreement"]
    print(f"wrote {', '.join(f'{k}_{{train,test}}.jsonl' for k in ALL_KINDS)} to {out_dir}/: the kept labels agree "
          f"with gold {report['test/labels_acc_gold']:.3f} (test pairs); " +
          (f"no scalar reward can agree with more than {bound:.3f} of the train pairs" if report["train/audit_exact"]
           else f"a scalar reward can agree with {bound:.3f} of the train pairs (a greedy order: some prompt's "
                f"labels join over 12 responses, so the exact best may be a little higher)"))
