"""
reward.py (goldRLHF): a reward model from human feedback, the second stage of RLHF (Ouyang et al. 2022, step 2).

A GPT with a scalar head, initialised from the SFT model, reads one number at the last token of
prompt + response (the <|endoftext|> when the response ended) and is trained with the loss that fits
the feedback people actually give:

    label_kind  file                 loss (--loss_type)
    pairwise    pairwise_*.jsonl     'bt': Bradley-Terry -log sigmoid(r+ - r-) (Stiennon et al. 2020)
                                     'margin': -log sigmoid(r+ - r- - margin) (Touvron et al. 2023, Llama 2)
                                     'hinge': max(0, m - (r+ - r-)) (torch's MarginRankingLoss, the tutorials)
                                     'soft': Bradley-Terry on the annotators' vote share (soft labels)
    rankings    rankings_*.jsonl     'pl': Plackett-Luce listwise likelihood (Plackett 1975; Luce 1959)
                                     'pairs': Bradley-Terry on all K(K-1)/2 pairs (Ouyang et al. 2022)
    ties        ties_*.jsonl         'rao_kupper': Bradley-Terry with an "about equal" outcome (Rao & Kupper 1967)
    likert      likert_*.jsonl       'mse': regression on the score mapped to [-1, 1]
                                     'ordinal': cumulative-logit ordinal model (McCullagh 1980)
    binary      binary_*.jsonl       'logistic': P(thumbs up) = sigmoid(r), cross-entropy on the label
    aspects     aspects_*.jsonl      'mse', 'ordinal' as likert, on the rating of one aspect (--aspect=NAME):
                                     one reward model per aspect, combined by ppo.py / grpo.py --aspect_weights

After training the reward is normalised to mean 0, std 1 over samples of the SFT policy (Ziegler et al.
2019): the checkpoint stores `reward_gain`, `reward_bias`; RL stages use gain * raw + bias. (An aspect's
model is instead calibrated to its aspect's units, so that weights of several compare: aspect_calibration.)

Feedback: feedback.py writes every kind from the same labelled responses to out/feedback/{kind}_
{train,test}.jsonl (formats: its docstring); data_path is that directory (train on {label_kind}_train,
test on pairwise_test) or one file of label_kind, real human feedback in any of data.py's formats:

    python feedback.py && python reward.py                 # built-in task, pairwise Bradley-Terry
    python reward.py --label_kind=rankings                 # same responses, Plackett-Luce
    python reward.py --label_kind=ties    /    --label_kind=likert --loss_type=ordinal
    python reward.py --data_path=prefs.jsonl --label_kind=pairwise --init_from=out/sft/ckpt.pt
    torchrun --nproc_per_node=2 reward.py                  # DDP

Evaluation (printed, and in out_dir/metrics.jsonl): on held-out pairs, accuracy against the labelers'
(noisy) choice `acc_noisy` and against the gold ordering `acc_gold`; Spearman correlation of the reward
with the gold score on fresh SFT samples `spearman`; a reliability table of predicted P(a > b) against
how often a was chosen, with its expected calibration error `ece`; and the same accuracies for a
length-only reward (`length_*`), the classic shortcut a reward model must beat.
Ensembles (--ensemble=K; Coste et al. 2023, Eisenstein et al. 2023): K whole reward models trained side by
side from the same SFT start, each with its own randomly initialised head, its own draw of batches and
(--bootstrap) its own resample with replacement of the feedback; one checkpoint (member 0 at the top, as a
single reward model, the others under `members`). ppo.py / grpo.py / sample.py read it as one reward
(--reward_ensemble=mean|worst|uncertainty). Whole models, not K heads on one shared body: the members
should disagree on responses unlike the labelled ones, and heads on one body share every feature. They
still share the SFT start, which Eisenstein et al. found limits the diversity of fine-tuned ensembles;
the eval reports how much they differ (`member_corr`, `ensemble_std`).
Departures: one small model trained from the SFT checkpoint for a few hundred steps (the papers use
one epoch over much more data); every kind is evaluated on the same pairwise test file so kinds compare.
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
import feedback
import task
from common import log_metrics
from configurator import MissingFile, UserError, configure
from model import score_sequences

# ----------------------------------------------------------------------------- config
out_dir = "out/reward"  # checkpoint and metrics.jsonl go here
init_from = "sft"  # 'sft' (the model at sft_path, new scalar head), 'resume', 'gpt2'.., or a checkpoint
sft_path = "out/sft/ckpt.pt"  # SFT policy: samples the normalisation set and the eval samples ('' none)
data_path = "out/feedback"  # feedback.py's out_dir (uses {label_kind}_train.jsonl) or a JSONL file of label_kind
test_path = ""  # held-out JSONL of any kind (read as pairs); '' = data_path's pairwise_test.jsonl, or last 10% of the file
label_kind = "pairwise"  # which feedback to train on: 'pairwise', 'rankings', 'ties', 'likert', 'binary' or 'aspects'
aspect = ""  # label_kind 'aspects': the aspect this model learns to rate (built-in: opinion, recommendation, fluency, brevity)
loss_type = ""  # '' = the kind's default (bt, pl, rao_kupper, mse); or margin, hinge, soft (pairwise), pairs, ordinal
hinge_margin = 1.0  # the margin m of the hinge loss
max_new_tokens = 40  # response length limit when sampling (normalisation and eval)
temperature = 1.0  # sampling temperature of the SFT policy
# optimisation
batch_size = 32  # items (pairs, rankings or rated responses) per step, per process
max_iters = 300  # optimizer steps
max_items = 0  # train on the first this many feedback items only (0: all): comparisons at equal label budgets
lr = 1e-3  # peak learning rate (the tiny built-in model; use ~1e-5 for GPT-2 weights)
warmup_iters = 20  # linear warmup steps
weight_decay = 0.0  # AdamW weight decay on matrices
grad_clip = 1.0  # clip the global gradient norm (0: off)
# eval and logging
log_interval = 50  # print/log train loss every this many steps
eval_interval = 150  # held-out accuracy every this many steps
n_norm = 256  # SFT samples on train prompts the reward is normalised over
n_eval = 2  # fresh SFT samples per test prompt for the Spearman correlation with gold
n_bins = 5  # bins of the reliability table
n_print = 3  # test pairs printed with their rewards
# runtime
device = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"  # 'auto' (bfloat16 on cuda), 'float32', 'bfloat16'
seed = 1337  # random seed (data order shared by all ranks; sampling offset by rank)
compile = False  # torch.compile the model
# ensembles
ensemble = 1  # K >= 2: K reward models trained side by side, saved in one checkpoint (see above)
bootstrap = True  # ensemble: each member trains on its own bootstrap resample of the feedback items

LOSSES = dict(pairwise=("bt", "margin", "hinge", "soft"), rankings=("pl", "pairs"), ties=("rao_kupper",),
              likert=("mse", "ordinal"), binary=("logistic",), aspects=("mse", "ordinal"))


# ----------------------------------------------------------------------------- the losses
def bt_loss(r_chosen, r_rejected, margin=None):
    """Bradley-Terry (1952) as in Stiennon et al. 2020: -log sigmoid(r+ - r- [- margin]), mean over B.
    r_chosen, r_rejected, margin: (B,). With a margin it is Llama 2's loss (Touvron et al. 2023, eq. 2):
    pairs people marked as clearly better must be separated by more."""
    d = r_chosen - r_rejected - (0.0 if margin is None else margin)
    return -F.logsigmoid(d).mean()


def soft_bt_loss(r_chosen, r_rejected, p_chosen):
    """Bradley-Terry against soft labels: the cross-entropy -(q log sigmoid(d) + (1 - q) log sigmoid(-d)),
    d = r+ - r-, q (B,) the share of the annotators who chose `chosen` (here (1 + margin) / 2, from the
    vote margin the files store). q = 1 is plain Bradley-Terry; a 2-1 vote asks for P = 2/3, not 1."""
    d = r_chosen - r_rejected
    return -(p_chosen * F.logsigmoid(d) + (1 - p_chosen) * F.logsigmoid(-d)).mean()


def hinge_loss(r_chosen, r_rejected, margin=1.0):
    """Margin-ranking hinge max(0, margin - (r+ - r-)), mean over B (torch.nn.MarginRankingLoss)."""
    return F.relu(margin - (r_chosen - r_rejected)).mean()


def plackett_luce_loss(r, mask=None):
    """Plackett-Luce negative log-likelihood of a ranking (Plackett 1975): r (B, K) rewards in ranked
    order, best first; mask (B, K) bool, True for real entries (rankings may be shorter than K, padded at
    the end). -log P = sum_k [logsumexp(r_k..r_K) - r_k]: the best is picked among all, the next among the
    rest, ... Mean over B. For K = 2 it is Bradley-Terry."""
    mask = torch.ones_like(r, dtype=torch.bool) if mask is None else mask
    r = r.masked_fill(~mask, float("-inf"))
    suffix = torch.logcumsumexp(r.flip(-1), -1).flip(-1)  # logsumexp over positions k..K
    nll = (suffix - r).masked_fill(~mask, 0.0)
    return nll.sum(-1).mean()


def all_pairs_loss(r, mask=None):
    """Bradley-Terry on every pair of a ranking, as InstructGPT trains on K-choose-2 comparisons
    (Ouyang et al. 2022, eq. 1): r (B, K) best first, mask (B, K). Mean over all real pairs."""
    mask = torch.ones_like(r, dtype=torch.bool) if mask is None else mask
    i, j = torch.triu_indices(r.shape[1], r.shape[1], offset=1)  # i ranked above j
    ok = mask[:, i] & mask[:, j]
    return -(F.logsigmoid(r[:, i] - r[:, j]) * ok).sum() / ok.sum().clamp(min=1)


def rao_kupper_loss(r_a, r_b, tie, alpha):
    """Rao & Kupper (1967): Bradley-Terry with a tie. With d = r_a - r_b and alpha = log(theta) >= 0:
    P(a > b) = sigmoid(d - alpha), P(b > a) = sigmoid(-d - alpha), P(tie) = the rest, i.e.
    log P(tie) = log(exp(2 alpha) - 1) - softplus(alpha - d) - softplus(alpha + d).
    r_a, r_b: (B,) with a the chosen one when not tied; tie: (B,) bool; alpha: scalar tensor, learned.
    alpha = 0 (no ties) is Bradley-Terry. Mean negative log-likelihood over B."""
    d = r_a - r_b
    log_win = -F.softplus(alpha - d)
    log_tie = 2 * alpha + torch.log(-torch.expm1(-2 * alpha).clamp(max=-1e-12)) \
        - F.softplus(alpha - d) - F.softplus(alpha + d)
    return -torch.where(tie, log_tie, log_win).mean()


def mse_loss(r, score, lo=1, hi=5):
    """Likert regression: MSE between r (B,) and the score (B,) mapped linearly from [lo, hi] to [-1, 1]."""
    target = 2 * (score.float() - lo) / (hi - lo) - 1
    return F.mse_loss(r, target)


def ordinal_loss(r, score, cuts):
    """Cumulative-logit ordinal regression (McCullagh 1980): P(score <= k) = sigmoid(c_k - r) with
    increasing cut points cuts (L-1,) for levels 1..L; r (B,), score (B,) ints in 1..L.
    -log P(score = k) = -log(sigmoid(c_k - r) - sigmoid(c_{k-1} - r)), c_0 = -inf, c_L = +inf. Mean over B."""
    inf = torch.tensor([float("inf")], device=r.device)
    c = torch.cat([-inf, cuts, inf])
    k = score.long()
    upper, lower = torch.sigmoid(c[k] - r), torch.sigmoid(c[k - 1] - r)
    return -torch.log((upper - lower).clamp(min=1e-12)).mean()


def ordinal_cuts(raw):
    """The ordinal model's increasing cut points from unconstrained parameters raw (L-1,): c_1 = raw_1,
    c_k = c_1 + sum_{j<=k} softplus(raw_j), so any raw gives strictly increasing cuts."""
    return torch.cat([raw[:1], raw[:1] + F.softplus(raw[1:]).cumsum(0)])


def ordinal_init(levels=5, spacing=1.0):
    """raw parameters whose cuts are evenly spaced and centred on 0: [-1.5, -0.5, 0.5, 1.5] for 5 levels,
    so an untrained reward of 0 puts about equal mass on every level (P = 0.18, 0.20, 0.24, 0.20, 0.18)."""
    first = -spacing * (levels - 2) / 2
    return torch.tensor([first] + [math.log(math.expm1(spacing))] * (levels - 2))  # softplus^-1(spacing)


def normalisation(raw):
    """gain, bias such that gain * raw + bias has mean 0 and (sample) std 1 over raw (N,), the rewards of
    SFT samples (Ziegler et al. 2019). A constant reward (std 0) keeps gain 1e6 rather than dividing by 0."""
    gain = 1.0 / max(raw.std().item(), 1e-6)
    return gain, -raw.mean().item() * gain


def aspect_calibration(raw, rating, value_range=None):
    """gain, bias of the least-squares line rating_value ~ gain * raw + bias over rated responses: raw (N,)
    rewards, rating (N,) 1..5, mapped to the aspect's units when its (worst, best) value_range is known
    (task.ASPECTS; else rating units). Then a policy's weighted sum of aspect rewards is in the units the
    weights mean: on the built-in task all weights 1 is gold's own weighting. An aspect the samples never
    vary on (raw or rating constant) gets gain 0: a constant, no signal."""
    y = rating if value_range is None else value_range[0] + (rating - 1) / 4 * (value_range[1] - value_range[0])
    x = raw - raw.mean()
    gain = (x * (y - y.mean())).sum().item() / max((x * x).sum().item(), 1e-12)
    return gain, y.mean().item() - gain * raw.mean().item()


# ----------------------------------------------------------------------------- evaluation helpers
def spearman(x, y):
    """Spearman rank correlation: Pearson correlation of the ranks, ties get their average rank."""
    def ranks(v):
        order, out, i = sorted(range(len(v)), key=v.__getitem__), [0.0] * len(v), 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in rx)), math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx > 0 and sy > 0 else 0.0


def reliability(p, y, n_bins=5):
    """Calibration (reliability diagram, DeGroot & Fienberg 1983): predicted probabilities p and 0/1
    outcomes y (lists) in n_bins equal-width bins. Returns rows (lo, hi, mean p, observed frequency, n)
    for non-empty bins and the expected calibration error sum_b n_b / N |mean p_b - freq_b|."""
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
    config = configure(globals(), choices=dict(label_kind=feedback.ALL_KINDS))
    loss_kind = loss_type or LOSSES[label_kind][0]  # the loss that runs (loss_type '' = the kind's default)
    if loss_kind not in LOSSES[label_kind]:
        raise UserError(f"--loss_type={loss_type!r} does not fit label_kind {label_kind!r}",
                        fix=f"use one of {', '.join(LOSSES[label_kind])}")
    if ensemble < 1:
        raise UserError(f"--ensemble={ensemble}: the number of reward models must be >= 1 (1: no ensemble)")
    # feedback.py's out_dir (every kind, train and test), or one file
    is_dir = os.path.isdir(data_path) or not (os.path.isfile(data_path) or data_path.endswith((".jsonl", ".json")))
    train_file = os.path.join(data_path, f"{label_kind}_train.jsonl") if is_dir else data_path
    if not os.path.exists(train_file):
        raise MissingFile(f"{train_file}: no {label_kind} feedback here", fix="run `python feedback.py` first "
                          "(it writes out/feedback/), or pass --data_path=your_file.jsonl")
    if (label_kind == "aspects") != bool(aspect):
        raise UserError(f"--aspect={aspect!r} with --label_kind={label_kind}", fix="--label_kind=aspects needs "
                        f"--aspect=NAME (built-in: {', '.join(task.ASPECTS)}); other kinds take no aspect")
    rt = common.setup(device, dtype, seed, out_dir)

    # ----------------------------------------------------------------------------- models
    # The SFT policy (rank 0 only) samples the normalisation set and the fresh eval samples. The reward model starts from it with a new scalar head (Ouyang et al. 2022).
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
    tok = data.Tokenizer(vocab)
    T = model.config.block_size
    for m in members:
        m.to(rt.device)

    # ----------------------------------------------------------------------------- data
    t0 = time.time()
    train_items, skipped = feedback.load_feedback(train_file, label_kind, aspect or None)
    if test_path or is_dir:  # any kind: every kind is tested as pairs, so kinds compare side by side
        test_file = test_path or os.path.join(data_path, "pairwise_test.jsonl")
        test_kind = feedback.detect_kind(test_file)
        test_items, test_skipped = feedback.load_feedback(test_file, test_kind)
    elif len(train_items) >= 20:  # hold out the last 10% of the file
        n_test = len(train_items) // 10
        test_kind, train_items, test_items, test_skipped = label_kind, train_items[:-n_test], train_items[-n_test:], []
    else:  # too few to hold any out
        test_kind, test_items, test_skipped = label_kind, train_items, []
        if rt.master:
            print(f"note: {data_path} has only {len(train_items)} items, too few to hold 10% out: training and "
                  f"evaluating on all of them (pass --test_path for a real test set)")
    train_items = train_items[:max_items] if max_items else train_items  # (after the held-out split)
    test_pairs, train_pairs = feedback.to_pairs(test_items, test_kind), feedback.to_pairs(train_items, label_kind)
    bad = [it["where"] for it in train_items if loss_kind == "soft" and not (it["y"] is not None and 0 <= it["y"] <= 1)]
    if bad:
        raise UserError("--loss_type=soft needs every pair's vote margin |for - against| / annotators in [0, 1]",
                        bad[0], "add a `margin` field (or use --loss_type=bt)")
    if rt.master and (skipped or test_skipped):
        print(f"skipped {len(skipped)} train / {len(test_skipped)} test rows without a comparison, "
              f"e.g. {(skipped + test_skipped)[0]}")
    known = set(task.all_prompts())
    has_gold = all(p in known for p, _, _ in test_pairs)  # the built-in task's prompts

    cut = [0]
    def encode(prompt, text):
        ids = tok.encode(prompt, "prompt") + tok.encode(text, "response")
        cut[0] += len(ids) > T
        return ids[:T]  # a cut response loses its last tokens: the reward then reads the last kept one
    for it in train_items:
        it["ids"] = [encode(it["prompt"], t) for t in it["texts"]]
    if rt.master and cut[0]:
        print(f"note: {cut[0]} sequences were longer than {T} tokens and were cut")
    # which items each member draws its batches from: all of them, or (ensemble, bootstrap) its own
    # resample of len(train_items) with replacement, fixed by the seed (the same on every rank, and on resume)
    n_items = len(train_items)
    pools = [range(n_items)] * ensemble if ensemble == 1 or not bootstrap else \
        [[r.randrange(n_items) for _ in range(n_items)] for r in (random.Random(seed + 1 + k) for k in range(ensemble))]

    # ----------------------------------------------------------------------------- optimizer
    # The loss's own parameters: Rao-Kupper's alpha = log(theta) >= 0, the ordinal model's cut points.
    # One set per member. One optimizer over every member (AdamW is per parameter: members stay independent).
    loss_params = torch.nn.ModuleList(torch.nn.ParameterDict(dict(tie=torch.nn.Parameter(torch.tensor(-1.0)),
                                      cuts=torch.nn.Parameter(ordinal_init()))) for _ in members).to(rt.device)
    optimizer = common.configure_optimizer(torch.nn.ModuleList(members), lr, weight_decay, rt.device_type)
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
            return F.binary_cross_entropy_with_logits(r[:, 0], y), ((r[:, 0] > 0).float() == y).float().mean().item()
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
        """Each member's gain, bias (two lists of K) that give its reward mean 0, std 1 over SFT samples on
        train prompts (Ziegler et al. 2019); without a policy the responses in the training data stand in for
        its samples. An aspect's model is calibrated to the aspect's own units instead (aspect_calibration),
        so weights compare."""
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
        """Held-out pairwise accuracy vs the labelers and vs gold; at the end (given the normalisation)
        also calibration, the length baseline and the Spearman correlation with gold of fresh samples.
        An ensemble is scored by its members' mean raw score (accuracies, calibration) and mean
        normalised score (Spearman, reward), and each member's accuracy is reported beside it."""
        for m in members:
            m.eval()
        rc_k = score_texts([(p, c) for p, c, _ in test_pairs])  # (K, N)
        rr_k = score_texts([(p, r) for p, _, r in test_pairs])
        rc, rr = rc_k.mean(0), rr_k.mean(0)
        out = {"acc_noisy": (rc > rr).float().mean().item()}
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
        # reliability: P(a > b) = sigmoid(r_a - r_b) against the labelers' choice, both orders of each pair
        p = torch.sigmoid(rc - rr).tolist()
        rel, out["ece"] = reliability(p + [1 - q for q in p], [1] * len(p) + [0] * len(p), n_bins)
        # length-only baseline: reward = +-(response length), the sign fitted on the training pairs
        ln = lambda p, t: len(tok.encode(t, "response"))
        tr = train_pairs
        sign = 1 if sum(ln(p, c) > ln(p, r) for p, c, r in tr) >= sum(ln(p, c) < ln(p, r) for p, c, r in tr) else -1
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
                corr = torch.corrcoef(norm)
                out["ensemble_std"] = norm.std(0).mean().item()
                out["member_corr"] = corr[~torch.eye(ensemble, dtype=torch.bool)].mean().item()
            golds = [task.gold(p, t) for p, t in zip(prompts, texts)]
            if aspect in task.ASPECTS:  # the aspect this model rates, against its true value
                out["spearman_aspect"] = spearman(rew, [task.aspects(p, t)[aspect] for p, t in zip(prompts, texts)])
            out.update(spearman=spearman(rew, golds), length_spearman=spearman([sign * n for n in lengths], golds),
                       reward=sum(rew) / len(rew), gold=sum(golds) / len(golds),
                       accept_rate=sum(map(task.accept_probability, prompts, texts)) / len(texts))
        for (p, c, r), a, b in list(zip(test_pairs, rc, rr))[:n_print]:
            print(f"  {p!r}\n    chosen   {c!r} reward {a:+.2f}" + (f" gold {task.gold(p, c):+.2f}" if has_gold else "")
                  + f"\n    rejected {r!r} reward {b:+.2f}" + (f" gold {task.gold(p, r):+.2f}" if has_gold else ""))
        print("reliability (P(a>b) predicted vs observed):")
        for lo, hi, mp, fr, n in rel:
            print(f"  [{lo:.1f}, {hi:.1f})  predicted {mp:.3f}  observed {fr:.3f}  n {n}")
        return out, rel

    # ----------------------------------------------------------------------------- training loop
    if rt.master:
        print(f"{label_kind} feedback, loss {loss_kind}: {len(train_items)} train items, {len(test_pairs)} test "
              f"pairs ({time.time() - t0:.1f}s)")
    start_iter = iter_num if ckpt else None
    def extra(gains=None, biases=None):  # the stage's checkpoint entries: member 0 on top, the others in members
        # (an intermediate checkpoint has no reward_gain yet, so RL stages refuse it)
        norm = lambda k: {} if gains is None else dict(reward_gain=gains[k], reward_bias=biases[k])
        return dict(label_kind=label_kind, aspect=aspect, loss_params=loss_params[0].state_dict(), **norm(0),
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
        # DDP: all ranks draw the same batch_size x world rows, each keeps every world-th: the averaged
        # gradients are the global batch's, so N processes train exactly like one at N x batch_size
        # (an ensemble: each member its own batch from its own pool, its own loss; their sum is backpropagated
        # once, which gives each member exactly its own loss's gradients)
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
        out, rel = evaluate(gain, bias)
        log_metrics(rt.metrics_path, {"iter": iter_num, "label_kind": label_kind, "loss_kind": loss_kind, **out})
        with open(rt.metrics_path, "a") as f:  # the reliability table as one JSON line
            f.write(json.dumps({"iter": iter_num, "reliability": [dict(lo=lo, hi=hi, predicted=round(mp, 4),
                                observed=round(fr, 4), n=n) for lo, hi, mp, fr, n in rel]}) + "\n")
    common.save(out_dir, rt, iter_num, config, vocab, rng, raw_model, optimizer, rng_states=states,
                **extra(gain, bias))
    common.finish(rt)
