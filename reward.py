"""
reward.py (goldRLHF): the reward model, RLHF's second stage (Ouyang et al. 2022): a GPT with a scalar head,
started from the SFT model, scores prompt + response at its last token, with the loss that fits the feedback:

    label_kind  loss (--loss_type; the first is the default)
    pairwise    'bt': Bradley-Terry -log sigmoid(r+ - r-) (Stiennon et al. 2020); 'margin': -log sigmoid(r+ - r- - m)
                (Llama 2); 'hinge': max(0, m - (r+ - r-)); 'soft': Bradley-Terry on the annotators' vote share
    rankings    'pl': Plackett-Luce listwise likelihood (Plackett 1975); 'pairs': Bradley-Terry on all K(K-1)/2 pairs
    ties        'rao_kupper': Bradley-Terry with an "about equal" outcome (Rao & Kupper 1967)
    likert      'mse': regression on the score mapped to [-1, 1]; 'ordinal': cumulative logit (McCullagh 1980);
                float scores in [1, 5] (ordinal: binned to the nearest level)
    binary      'logistic': P(thumbs up) = sigmoid(r), cross-entropy on the label (Glaese et al. 2022)
    aspects     'mse' or 'ordinal' on one aspect's rating (--aspect=NAME): one model per aspect, summed with
                weights by ppo.py / grpo.py --aspect_weights

Normalisation (Ziegler et al. 2019): gain * raw + bias has mean 0, std 1 over SFT samples (an aspect's model:
fitted to the aspect's units, so weights compare); the checkpoint stores reward_gain, reward_bias.
Ensembles (--ensemble=K; Coste et al. 2023; Eisenstein et al. 2023): K whole models (heads on one body share
every feature), each with its own batches and (--bootstrap) feedback resample, in one checkpoint (--reward_ensemble).
data_path: feedback.py's out_dir (train on {label_kind}_train.jsonl) or one file (one response per prompt is
enough for thumbs and ratings; tie rows are skipped, and counted, by every loss but Rao-Kupper's). The losses
are in reward_losses.py. Eval on held-out rows: thumbs' accuracy and AUC, ratings' Spearman; where pairs exist,
accuracy vs the labelers (acc_noisy) and gold (acc_gold), calibration (ece) and a length-only baseline
(length_*); on the built-in task's prompts, Spearman with gold (held-out rows, fresh SFT samples).
Departures: a few hundred steps on little data (the papers: an epoch on much more); every kind is tested on
the same pairwise_test.jsonl, so kinds compare.

    python feedback.py && python reward.py       # or --label_kind=likert --loss_type=ordinal, --data_path=FILE
    torchrun --nproc_per_node=2 reward.py        # DDP
"""
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F

import common
import data
import feedback_data
import task
from common import log_metrics
from audit import spearman
from configurator import MissingFile, UserError, configure
from model import score_sequences
from reward_losses import (all_pairs_loss, auc, bt_loss, hinge_loss, mse_loss, ordinal_cuts, ordinal_init, ordinal_loss,
                           plackett_luce_loss, rao_kupper_loss, soft_bt_loss, thumbs_loss)

# ----------------------------------------------------------------------------- config
out_dir = "out/reward"  # checkpoint and metrics.jsonl go here
init_from = "sft"  # 'sft' (the model at sft_path, new scalar head), 'resume', 'gpt2'.., or a checkpoint
overwrite = False  # replace what an earlier run left in out_dir: its checkpoint, metrics.jsonl (a fresh run refuses to)
sft_path = "out/sft/ckpt.pt"  # SFT policy: samples the normalisation set and the eval samples ('' none)
data_path = "out/feedback"  # feedback.py's out_dir (uses {label_kind}_train.jsonl) or a JSONL file of label_kind
test_path = ""  # held-out JSONL of any kind (read as pairs); '' = data_path's pairwise_test.jsonl, or the last 10%
label_kind = "pairwise"  # which feedback to train on: 'pairwise', 'rankings', 'ties', 'likert', 'binary' or 'aspects'
aspect = ""  # label_kind 'aspects': the aspect this model rates (built-in: completeness, faithfulness, recommendation, hallucination, fluency, brevity)
loss_type = ""  # '' = the kind's default (bt, pl, rao_kupper, mse); or margin, hinge, soft (pairwise), pairs, ordinal
hinge_margin = 1.0  # the margin m of the hinge loss [> 0]
max_new_tokens = 40  # response length limit when sampling (normalisation and eval) [> 0]
temperature = 1.0  # sampling temperature of the SFT policy (0: greedy) [>= 0]
batch_size = 32  # items (pairs, rankings or rated responses) per step, per process [> 0]
max_iters = 200  # optimizer steps [> 0]
max_items = 0  # train on the first this many feedback items only (0: all): comparisons at equal label budgets [>= 0]
half = 0  # 1 or 2: train on the first or the second half of the train items (0: all): an audit model (monitors.py) [>= 0, <= 2]
lr = 3e-4  # peak learning rate (the tiny built-in model; use ~1e-5 for GPT-2 weights) [> 0]
warmup_iters = 20  # linear warmup steps [>= 0]
weight_decay = 0.0  # AdamW weight decay on matrices [>= 0]
grad_clip = 1.0  # clip the global gradient norm (0: off) [>= 0]
log_interval = 50  # print/log train loss every this many steps [> 0]
eval_interval = 100  # held-out accuracy every this many steps [> 0]
n_norm = 256  # SFT samples on train prompts the reward is normalised over [>= 2]
n_eval = 2  # fresh SFT samples per test prompt for the Spearman correlation with gold [> 0]
n_bins = 5  # bins of the reliability table [> 0]
n_print = 3  # test pairs printed with their rewards [>= 0]
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank) [>= 0]
compile = False  # torch.compile the model
ensemble = 1  # K >= 2: K reward models trained side by side, saved in one checkpoint (see above) [>= 1]
bootstrap = True  # ensemble: each member trains on its own bootstrap resample of the feedback items

LOSSES = dict(pairwise=("bt", "margin", "hinge", "soft"), rankings=("pl", "pairs"), ties=("rao_kupper",),
              likert=("mse", "ordinal"), binary=("logistic",), aspects=("mse", "ordinal"))


def normalisation(raw):
    """gain, bias that give raw (N,) mean 0 and std 1 (a constant raw: gain 1e6, no division by 0)."""
    gain = 1.0 / max(raw.std().item(), 1e-6)
    return gain, -raw.mean().item() * gain


def aspect_calibration(raw, rating, value_range=None):
    """gain, bias of the least-squares fit on raw (N,) of the ratings 1..5 mapped to the aspect's (worst, best)
    value_range: weighted aspect rewards are then in the weights' units. raw or rating constant: gain 0."""
    y = rating if value_range is None else value_range[0] + (rating - 1) / 4 * (value_range[1] - value_range[0])
    x = raw - raw.mean()
    gain = (x * (y - y.mean())).sum().item() / max((x * x).sum().item(), 1e-12)
    return gain, y.mean().item() - gain * raw.mean().item()


# ----------------------------------------------------------------------------- evaluation helpers
def reliability(p, y, n_bins=5):
    """p against 0/1 outcomes y in equal bins: rows (lo, hi, mean p, frequency, n), expected calibration error."""
    rows, ece = [], 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i, q in enumerate(p) if lo <= q < hi or (b == n_bins - 1 and q == 1.0)]
        if idx:
            mp, fr = sum(p[i] for i in idx) / len(idx), sum(y[i] for i in idx) / len(idx)
            rows.append((lo, hi, mp, fr, len(idx)))
            ece += len(idx) / len(p) * abs(mp - fr)
    return rows, ece


if __name__ == "__main__":
    config = configure(globals(), choices=dict(label_kind=data.FEEDBACK_KINDS))
    loss_kind = loss_type or LOSSES[label_kind][0]  # the loss that runs (loss_type '' = the kind's default)
    if loss_kind not in LOSSES[label_kind]:
        raise UserError(f"--loss_type={loss_type!r} does not fit label_kind {label_kind!r}",
                        fix=f"use one of {', '.join(LOSSES[label_kind])}")
    is_dir = os.path.isdir(data_path) or not (os.path.isfile(data_path) or data_path.endswith((".jsonl", ".json")))
    train_file = os.path.join(data_path, f"{label_kind}_train.jsonl") if is_dir else data_path
    if not os.path.exists(train_file):
        raise MissingFile(f"{train_file}: no {label_kind} feedback here", fix="run `python feedback.py` first "
                          "(it writes out/feedback/), or pass --data_path=your_file.jsonl")
    if (label_kind == "aspects") != bool(aspect):
        raise UserError(f"--aspect={aspect!r} with --label_kind={label_kind}", fix="--label_kind=aspects needs "
                        f"--aspect=NAME (built-in: {', '.join(task.ASPECTS)}); other kinds take no aspect")
    rt = common.setup(device, dtype, seed, out_dir, config, ("sft_path", "init_from", "data_path", "test_path"))

    # ----------------------------------------------------------------------------- models
    policy = vocab_p = None
    if sft_path and rt.master:
        policy, vocab_p, _ = common.load_model(sft_path)
        policy.to(rt.device).eval()
    source = out_dir if init_from == "resume" else sft_path if init_from == "sft" else init_from
    model, vocab, ckpt = common.load_model(source, scalar_head=True)
    ckpt = ckpt if init_from == "resume" else None
    if ckpt and len(ckpt.get("members", [])) + 1 != ensemble:
        raise UserError(f"{out_dir}: the checkpoint holds {len(ckpt.get('members', [])) + 1} reward models, "
                        f"--ensemble={ensemble}", fix="resume with the --ensemble it was trained with")
    members = [model]  # the ensemble's other members: the same body, each a fresh random head
    for k in range(1, ensemble):
        members.append(common.load_model(source, scalar_head=True)[0])
        if ckpt:
            members[k].load_state_dict(ckpt["members"][k - 1]["model"])
    if policy is not None:
        common.check_vocab(vocab, vocab_p, f"reward model ({init_from}) vs SFT policy {sft_path}")
    tok, T = data.Tokenizer(vocab), model.config.block_size
    for m in members:
        m.to(rt.device)

    # ----------------------------------------------------------------------------- data
    t0 = time.time()
    train_items, skipped = feedback_data.load_feedback(train_file, label_kind, aspect or None)
    if (why := feedback_data.uninformative(train_items, label_kind, loss_kind)):  # (before the held-out split)
        raise UserError(why, train_file, "add rows that differ (or train on another --label_kind)")
    if test_path or is_dir:  # any kind: every kind is tested as pairs, so kinds compare side by side
        test_file = test_path or os.path.join(data_path, "pairwise_test.jsonl")
        test_kind = feedback_data.detect_kind(test_file)
        test_items, test_skipped = feedback_data.load_feedback(test_file, test_kind)
    elif len(train_items) >= 20:  # hold out the last 10% of the file
        n_test = len(train_items) // 10
        test_kind, train_items, test_items, test_skipped = label_kind, train_items[:-n_test], train_items[-n_test:], []
    else:  # too few to hold any out
        test_kind, test_items, test_skipped = label_kind, train_items, []
        if rt.master:
            print(f"note: {data_path} has only {len(train_items)} items, too few to hold 10% out: training and "
                  f"evaluating on all of them (pass --test_path for a real test set)")
    train_items = train_items[:max_items] if max_items else train_items  # (after the held-out split)
    if half:  # two equal halves of the labels: a training reward model on one, an audit model on the other
        n_half = len(train_items) // 2
        train_items = train_items[:n_half] if half == 1 else train_items[n_half:2 * n_half]
    test_pairs = feedback_data.to_pairs(test_items, test_kind)
    train_pairs = feedback_data.to_pairs(train_items, label_kind)
    bad = [it["where"] for it in train_items if loss_kind == "soft" and not (it["y"] is not None and 0 <= it["y"] <= 1)]
    if bad:
        raise UserError("--loss_type=soft needs every pair's vote margin |for - against| / annotators in [0, 1]",
                        bad[0], "add a `margin` field (or use --loss_type=bt)")
    ties = sum(s.endswith(feedback_data.TIE) for s in skipped + test_skipped)
    if rt.master and (skipped or test_skipped):
        print(f"skipped {len(skipped)} train / {len(test_skipped)} test rows ({ties} ties" + ("; --label_kind=ties "
              "trains on them" if ties else "") + f"), e.g. {(skipped + test_skipped)[0]}")
    pointwise = test_kind in ("binary", "likert", "aspects")  # held-out rows with a label of their own
    known = set(task.all_prompts())
    has_gold = all(it["prompt"] in known for it in test_items)  # the built-in task's prompts
    if policy is not None:  # the SFT samples (normalisation, eval) of these prompts must fit: checked now
        room = data.prompt_room(max_new_tokens, {"SFT policy (--sft_path)": policy.config.block_size})
        first = {it["prompt"]: it["where"] for it in reversed(train_items)} if label_kind != "aspects" else {}
        data.encode_prompts(tok, list(first), room, list(first.values()))
        data.encode_prompts(tok, task.prompts("test") if has_gold else [], room, "the built-in task's test prompt")

    cut = [0]
    def encode(prompt, text, where="prompt"):
        p = tok.encode(prompt, where)
        if len(p) >= T:  # no token of the response would be read
            raise UserError(f"the prompt has {len(p)} tokens; the reward model reads {T} (its block_size), a "
                            "response too", where, "shorten it")
        ids = p + tok.encode(text, where)
        cut[0] += len(ids) > T
        return ids[:T]  # a cut response loses its last tokens: the reward then reads the last kept one
    for it in train_items:
        it["ids"] = [encode(it["prompt"], t, it["where"]) for t in it["texts"]]
    if rt.master and cut[0]:
        print(f"note: {cut[0]} sequences were longer than {T} tokens and were cut")
    for it in test_items:  # (scored at every eval: checked now, naming the line)
        for t in it["texts"]:
            encode(it["prompt"], t, it["where"])
    n_items = len(train_items)  # members' batches: from all items, or (--bootstrap) each from its own resample
    pools = [range(n_items)] * ensemble if ensemble == 1 or not bootstrap else \
        [[r.randrange(n_items) for _ in range(n_items)] for r in (random.Random(seed + 1 + k) for k in range(ensemble))]

    # ----------------------------------------------------------------------------- optimizer
    loss_params = torch.nn.ModuleList(torch.nn.ParameterDict(dict(tie=torch.nn.Parameter(torch.tensor(-1.0)),
                                      cuts=torch.nn.Parameter(ordinal_init()))) for _ in members).to(rt.device)
    optimizer = common.configure_optimizer(torch.nn.ModuleList(members), lr, weight_decay)
    optimizer.add_param_group(dict(params=list(loss_params.parameters()), weight_decay=0.0))
    rng, iter_num = common.resume(ckpt, rt, seed, optimizer)
    if ckpt:
        for lp, state in zip(loss_params, [ckpt["loss_params"]] + [m["loss_params"] for m in ckpt["members"]]):
            lp.load_state_dict(state)
    raw_model, models = model, [common.wrap(m, rt, compile) for m in members]

    def compute_loss(items, m, lp):
        """One batch of feedback items -> (loss, accuracy of the first response over the second)."""
        seqs = [s for it in items for s in it["ids"]]
        with rt.ctx:
            flat = score_sequences(m, seqs, tok.eot, chunk=len(seqs))
        K = max(len(it["ids"]) for it in items)
        r = torch.zeros(len(items), K, device=flat.device)
        mask = torch.zeros(len(items), K, dtype=torch.bool, device=flat.device)
        n = 0
        for b, it in enumerate(items):
            k = len(it["ids"])
            r[b, :k], mask[b, :k] = flat[n:n + k], True
            n += k
        if label_kind == "binary":  # thumbs up / down: a logistic regression of the label on the reward
            y = torch.tensor([float(it["y"]) for it in items], device=r.device)
            return thumbs_loss(r[:, 0], y), ((r[:, 0] > 0).float() == y).float().mean().item()
        if label_kind in ("likert", "aspects"):
            y = torch.tensor([it["y"] for it in items], device=r.device)
            cuts = ordinal_cuts(lp["cuts"])
            return (mse_loss(r[:, 0], y) if loss_kind == "mse" else ordinal_loss(r[:, 0], y, cuts)), float("nan")
        acc = (r[:, 0] > r[:, 1]).float().mean().item()
        if label_kind == "ties":
            tie = torch.tensor([it["y"] for it in items], device=r.device)
            acc = (r[~tie, 0] > r[~tie, 1]).float().mean().item() if (~tie).any() else float("nan")
            return rao_kupper_loss(r[:, 0], r[:, 1], tie, F.softplus(lp["tie"])), acc
        if label_kind == "rankings":
            return (plackett_luce_loss(r, mask) if loss_kind == "pl" else all_pairs_loss(r, mask)), acc
        margin = torch.tensor([float(it["y"] or 0.0) for it in items], device=r.device)  # (no margin: 0)
        return {"bt": lambda: bt_loss(r[:, 0], r[:, 1]), "margin": lambda: bt_loss(r[:, 0], r[:, 1], margin),
                "hinge": lambda: hinge_loss(r[:, 0], r[:, 1], hinge_margin),
                "soft": lambda: soft_bt_loss(r[:, 0], r[:, 1], (1 + margin) / 2)}[loss_kind](), acc

    @torch.no_grad()
    def score_texts(pairs):
        """Raw rewards (K, N) on the CPU of (prompt, response) pairs, a row per member (rank 0, raw models)."""
        seqs = [encode(p, t) for p, t in pairs]
        with rt.ctx:
            return torch.stack([score_sequences(m, seqs, tok.eot).cpu() for m in members])

    @torch.no_grad()
    def policy_samples(prompts):
        with rt.ctx:
            return data.sample_responses(policy, tok, prompts, max_new_tokens, temperature, batch_size=256)

    def fit_normalisation():
        """Each member's gain, bias (two lists of K) over SFT samples (no policy: the training responses)."""
        if label_kind == "aspects":
            items = train_items[:4 * n_norm]
            rating = torch.tensor([float(it["y"]) for it in items])
            raw = score_texts([(it["prompt"], it["texts"][0]) for it in items])
            return [list(x) for x in zip(*(aspect_calibration(r, rating, task.ASPECTS.get(aspect)) for r in raw))]
        if policy is not None:
            norm_rng, train_prompts = random.Random(seed), sorted({it["prompt"] for it in train_items})
            prompts = [norm_rng.choice(train_prompts) for _ in range(n_norm)]
            texts = policy_samples(prompts)[0]
        else:
            prompts, texts = zip(*[(it["prompt"], t) for it in train_items[:n_norm] for t in it["texts"]])
        return [list(x) for x in zip(*(normalisation(r) for r in score_texts(list(zip(prompts, texts)))))]

    @torch.no_grad()
    def evaluate(gain=None, bias=None):
        """Held-out metrics of rows (thumbs, ratings) and of pairs, where there are any; with the normalisation
        also the rest. An ensemble: its members' mean (and each member's acc_gold)."""
        for m in members:
            m.eval()
        out, rel = {}, []
        if pointwise:  # each held-out row against its own label: thumbs' accuracy and AUC, ratings' Spearman
            rw = score_texts([(it["prompt"], it["texts"][0]) for it in test_items]).mean(0)
            y = torch.tensor([float(it["y"].get(aspect) or sum(it["y"].values())) if isinstance(it["y"], dict)
                              else float(it["y"]) for it in test_items])
            if test_kind == "binary":  # P(up) = sigmoid(raw reward): up where it is > 0
                out.update(acc_thumbs=((rw > 0).float() == y).float().mean().item(), auc_thumbs=auc(rw, y))
                if gain is not None and not test_pairs:
                    rel, out["ece"] = reliability(torch.sigmoid(rw).tolist(), y.tolist(), n_bins)
            else:
                out["spearman_rating"] = spearman(rw.tolist(), y.tolist())
            if has_gold:
                out["spearman_gold_rows"] = spearman(rw.tolist(), [task.gold(it["prompt"], it["texts"][0])
                                                                   for it in test_items])
            for it, x in list(zip(test_items, rw.tolist()))[:n_print if gain is not None else 0]:
                print(f"  {it['prompt']!r} -> {it['texts'][0]!r}\n    label {it['y']} reward {x:+.2f}")
        if test_pairs:  # pairs only where there are any (ratings or thumbs: several responses to one prompt)
            rc_k = score_texts([(p, c) for p, c, _ in test_pairs])  # (K, N)
            rr_k = score_texts([(p, r) for p, _, r in test_pairs])
            rc, rr = rc_k.mean(0), rr_k.mean(0)
            out["acc_noisy"] = (rc > rr).float().mean().item()
            if has_gold:
                gc = torch.tensor([task.gold(p, c) for p, c, _ in test_pairs])
                gr = torch.tensor([task.gold(p, r) for p, _, r in test_pairs])
                d = gc != gr  # gold ties have no right answer
                out["acc_gold"] = ((rc > rr) == (gc > gr))[d].float().mean().item()
                out["labelers_acc_gold"] = (gc > gr)[d].float().mean().item()  # the majority vote's own accuracy
                if ensemble > 1:
                    out["member_acc_gold"] = [round(((a > b) == (gc > gr))[d].float().mean().item(), 4)
                                              for a, b in zip(rc_k, rr_k)]
        if gain is None:
            for m in members:
                m.train()
            return out, None
        ln = lambda p, t: len(tok.encode(t, "response"))  # the length baseline: +-length, sign fitted on train
        tr = train_pairs
        sign = 1 if sum(ln(p, c) > ln(p, r) for p, c, r in tr) >= sum(ln(p, c) < ln(p, r) for p, c, r in tr) else -1
        if test_pairs:
            p = torch.sigmoid(rc - rr).tolist()  # P(a > b) against the labelers' choice, both orders of each pair
            rel, out["ece"] = reliability(p + [1 - q for q in p], [1] * len(p) + [0] * len(p), n_bins)
            len_c = torch.tensor([sign * ln(p, c) for p, c, _ in test_pairs], dtype=torch.float)
            len_r = torch.tensor([sign * ln(p, r) for p, _, r in test_pairs], dtype=torch.float)
            wins = (len_c > len_r).float() + 0.5 * (len_c == len_r).float()  # ties: a coin
            out["length_acc_noisy"] = wins.mean().item()
            if has_gold:
                out["length_acc_gold"] = wins[d].mean().item()
        out["reward_gain"], out["reward_bias"] = (gain[0], bias[0]) if ensemble == 1 else (gain, bias)
        if has_gold and policy is not None:  # fresh samples on test prompts
            prompts = [p for p in task.prompts("test") for _ in range(n_eval)]
            texts, lengths, _ = policy_samples(prompts)
            norm = score_texts(list(zip(prompts, texts))) * torch.tensor(gain)[:, None] + torch.tensor(bias)[:, None]
            rew = norm.mean(0).tolist()
            if ensemble > 1:  # how much the members disagree on fresh SFT samples (normalised units)
                out["ensemble_std"] = norm.std(0).mean().item()
                out["member_corr"] = torch.corrcoef(norm)[~torch.eye(ensemble, dtype=torch.bool)].mean().item()
            golds = [task.gold(p, t) for p, t in zip(prompts, texts)]
            if aspect in task.ASPECTS:  # the aspect this model rates, against its true value
                out["spearman_aspect"] = spearman(rew, [task.aspects(p, t)[aspect] for p, t in zip(prompts, texts)])
            out.update(spearman=spearman(rew, golds), length_spearman=spearman([sign * n for n in lengths], golds),
                       reward=sum(rew) / len(rew), gold=sum(golds) / len(golds),
                       accept_rate=sum(map(task.accept_probability, prompts, texts)) / len(texts))
        if has_gold:  # the biases of people (task.probes): how often the model prefers what gold prefers
            for name, pairs in task.probes(task.prompts("test", 400)).items():
                s = score_texts([(p, a) for p, a, _ in pairs] + [(p, b) for p, _, b in pairs]).mean(0)
                out[f"probe/{name}"] = (s[:len(pairs)] > s[len(pairs):]).float().mean().item()
        for (p, c, r), a, b in list(zip(test_pairs, rc, rr))[:n_print] if test_pairs else []:
            print(f"  {p!r}\n    chosen   {c!r} reward {a:+.2f}" + (f" gold {task.gold(p, c):+.2f}" if has_gold else "")
                  + f"\n    rejected {r!r} reward {b:+.2f}" + (f" gold {task.gold(p, r):+.2f}" if has_gold else ""))
        if rel:
            print(f"reliability ({'P(a>b)' if test_pairs else 'P(up)'} predicted vs observed):")
        for lo, hi, mp, fr, n in rel:
            print(f"  [{lo:.1f}, {hi:.1f})  predicted {mp:.3f}  observed {fr:.3f}  n {n}")
        return out, rel

    # ----------------------------------------------------------------------------- training loop
    if rt.master:
        print(f"{label_kind} feedback, loss {loss_kind}: {len(train_items)} train items, {len(test_items)} test "
              f"items, {len(test_pairs)} test pairs ({time.time() - t0:.1f}s)")
    start_iter = iter_num if ckpt else None
    def extra(gains=None, biases=None, **final):  # the checkpoint entries: member 0 on top, the others in members
        norm = lambda k: {} if gains is None else dict(reward_gain=gains[k], reward_bias=biases[k])
        return dict(label_kind=label_kind, aspect=aspect, loss_params=loss_params[0].state_dict(), **norm(0), **final,
                    members=[dict(model=m.state_dict(), loss_params=lp.state_dict(), **norm(k + 1))
                             for k, (m, lp) in enumerate(zip(members[1:], loss_params[1:]))])
    t0 = time.time()
    for m in members:
        m.train()
    while True:
        if iter_num % eval_interval == 0 and iter_num not in (start_iter, max_iters):  # (the end: below)
            if rt.master:  # intermediate checkpoints have no reward_gain yet, so RL stages refuse them
                log_metrics(rt.metrics_path, {"iter": iter_num, **evaluate()[0]})
            common.save(out_dir, rt, iter_num, config, vocab, rng, raw_model, optimizer, **extra())
        if iter_num >= max_iters:
            break
        common.set_lr(optimizer, common.cosine_lr(iter_num, lr, warmup_iters, max_iters))
        # DDP: every rank draws the same batch_size x world rows, keeps every world-th; each member its own batch
        losses, accs = [], []
        for m, lp, pool in zip(models, loss_params, pools):
            items = [train_items[pool[rng.randrange(n_items)]] for _ in range(batch_size * rt.world_size)]
            loss, acc = compute_loss(items[rt.rank::rt.world_size], m, lp)
            losses.append(loss)
            accs.append(acc)
        loss, acc = torch.stack(losses).mean(), sum(accs) / len(accs)
        if not torch.isfinite(loss):
            raise RuntimeError(f"iter {iter_num}: loss is {loss.item()}; lower --lr or check the data")
        torch.stack(losses).sum().backward()
        if rt.ddp:  # DDP averages the model's gradients; the loss's own parameters are averaged here
            for q in loss_params.parameters():
                if q.grad is not None:
                    torch.distributed.all_reduce(q.grad)
                    q.grad /= rt.world_size
        for m in members[1:] if grad_clip > 0 else []:  # each member clipped on its own (member 0: below)
            torch.nn.utils.clip_grad_norm_(m.parameters(), grad_clip)
        common.optimizer_step(optimizer, models[0], grad_clip)
        iter_num += 1
        if iter_num % log_interval == 0 and rt.master:
            dt = (time.time() - t0) / log_interval
            alpha = {"alpha": F.softplus(loss_params[0]["tie"]).item()} if label_kind == "ties" else {}
            log_metrics(rt.metrics_path, {"iter": iter_num, "loss": loss.item(), "accuracy": acc,
                                          "lr": optimizer.param_groups[0]["lr"], "ms_per_iter": 1000 * dt, **alpha})
            t0 = time.time()

    # ----------------------------------------------------------------------------- normalise, eval, save
    states, gain, bias = common.rng_state(rng, rt), None, None  # (the random state before the final eval)
    if rt.master:
        gain, bias = fit_normalisation()
        if not all(map(math.isfinite, gain + bias)):  # NaN would reach every RL stage through the checkpoint
            raise UserError(f"the reward's normalisation is not finite (gain {gain}, bias {bias}); nothing saved",
                            out_dir, "raise --n_norm, or check the data for rows the model scores alike")
        # its normalised reward (members' mean) on its training responses: the range it has seen (monitors.py ood_frac)
        seen = [(it["prompt"], t) for it in train_items[:256] for t in it["texts"]]
        seen = (score_texts(seen) * torch.tensor(gain)[:, None] + torch.tensor(bias)[:, None]).mean(0)
        labelled = dict(zip(("q01", "q50", "q99"), seen.quantile(torch.tensor([0.01, 0.5, 0.99])).tolist()))
        out, rel = evaluate(gain, bias)
        log_metrics(rt.metrics_path, {"iter": iter_num, "label_kind": label_kind, "loss_kind": loss_kind, **out})
        with open(rt.metrics_path, "a") as f:  # the reliability table as one JSON line
            f.write(json.dumps({"iter": iter_num, "reliability": [dict(lo=lo, hi=hi, predicted=round(mp, 4),
                                observed=round(fr, 4), n=n) for lo, hi, mp, fr, n in rel]}) + "\n")
    common.save(out_dir, rt, iter_num, config, vocab, rng, raw_model, optimizer, rng_states=states,
                **extra(gain, bias, **({"labelled_scores": labelled} if rt.master else {})))
    common.finish(rt)
