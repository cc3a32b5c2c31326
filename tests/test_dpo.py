"""dpo.py: the loss at hand-computed values, its gradient's direction, and the script end to end
(smoke, online == precomputed reference, bad input, resume, DDP, learning on the built-in task)."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from common import load_model, save_checkpoint
from conftest import small_test_pairs, assert_same_weights, last_eval, read_metrics, run
from dpo import LOSS_TYPES, dpo_loss, kto_loss, kto_mismatched, kto_reference_point, pair_mean

# ----------------------------------------------------------------------------- the pure loss

def _t(*v):
    return torch.tensor(v, dtype=torch.float32)


def lossval(loss_type, logps_c, logps_r, ref_c, ref_r, len_c=1.0, len_r=1.0, **kw):
    return dpo_loss(_t(logps_c), _t(logps_r), _t(ref_c), _t(ref_r), _t(len_c), _t(len_r), loss_type, **kw)


# h = (logps_c - ref_c) - (logps_r - ref_r) = (-10 - -12) - (-15 - -13) = 2 + 2 = 4; with beta = 0.25, beta*h = 1
SP1 = math.log(1 + math.exp(-1))  # -log sigmoid(1) = 0.31326
SM1 = math.log(1 + math.exp(1))  # -log sigmoid(-1) = 1.31326


@pytest.mark.parametrize("loss_type,kw,expected", [
    ("sigmoid", {}, SP1),                                                   # 0.31326
    ("sigmoid", {"label_smoothing": 0.1}, 0.9 * SP1 + 0.1 * SM1),           # cDPO: 0.41326
    ("robust", {"label_smoothing": 0.1}, (0.9 * SP1 - 0.1 * SM1) / 0.8),    # 0.18826
    ("ipo", {}, (4 - 1 / (2 * 0.25)) ** 2),                                # (4 - 2)^2 = 4
    ("hinge", {}, 0.0),                                                     # relu(1 - 1) = 0
    ("sigmoid", {"rpo_alpha": 0.5}, SP1 + 0.5 * 10 / 5),                    # + alpha * NLL per token = +1
])
def test_loss_hand_computed(loss_type, kw, expected):
    losses, rc, rr = lossval(loss_type, -10, -15, -12, -13, len_c=5, len_r=5, beta=0.25, **kw)
    assert losses.item() == pytest.approx(expected, abs=1e-5)
    assert rc.item() == pytest.approx(0.25 * 2) and rr.item() == pytest.approx(0.25 * -2)  # beta * log ratio


def test_hinge_and_ipo_off_the_margin():
    # beta*h = 0.5: hinge = 1 - 0.5; ipo with beta = 0.5, h = 1: (1 - 1/(2*0.5))^2 = 0 (at its target)
    assert lossval("hinge", -1, -2, -1, -1.5, beta=1.0)[0].item() == pytest.approx(0.5)
    assert lossval("ipo", -1, -2, -1, -1, beta=0.5)[0].item() == pytest.approx(0.0)


def test_simpo_hand_computed():
    # average log-probs -6/3 = -2 and -12/4 = -3; simpo_beta 2 * (1) - gamma 1 = 1 -> -log sigmoid(1)
    losses, rc, rr = dpo_loss(_t(-6), _t(-12), None, None, _t(3), _t(4), "simpo", simpo_beta=2.0, simpo_gamma=1.0)
    assert losses.item() == pytest.approx(SP1, abs=1e-5)
    assert (rc.item(), rr.item()) == (pytest.approx(-4.0), pytest.approx(-6.0))


def test_sigmoid_without_smoothing_is_the_plain_formula():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-20 * torch.rand(16, generator=g) for _ in range(4))
    n = torch.randint(1, 20, (16,), generator=g).float()
    losses, _, _ = dpo_loss(pc, pr, rc, rr, n, n, "sigmoid", beta=0.3, label_smoothing=0.0)
    assert torch.allclose(losses, -F.logsigmoid(0.3 * ((pc - rc) - (pr - rr))), atol=1e-6)
    # and robust with eps = 0 is the same loss
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, n, n, "robust", beta=0.3)[0], losses, atol=1e-6)


@pytest.mark.parametrize("loss_type", [t for t in LOSS_TYPES if t != "kto"])  # (KTO: test_kto_gradient_direction)
def test_gradient_pushes_chosen_up_and_rejected_down(loss_type):
    pc, pr = _t(-10.0, -3.0).requires_grad_(), _t(-10.0, -8.0).requires_grad_()
    losses, _, _ = dpo_loss(pc, pr, _t(-10.0, -4.0), _t(-10.0, -7.0), _t(4, 4), _t(4, 4), loss_type, beta=0.1)
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # gradient descent raises chosen, lowers rejected


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="unknown loss_type"):
        lossval("nope", -1, -2, -1, -2)


def test_kto_worked_example():
    """Two rows, beta 0.5, lambda_D = lambda_U = 1. Desirable: log-ratio r = -10 - -12 = 2; undesirable:
    r = -9 - -8 = -1. Mismatched pairs' log-ratios 1 and 0.5: z0 = 0.75. Losses 1 - sigmoid(0.5 (2 - 0.75))
    = 1 - sigmoid(0.625) = 0.348645 and 1 - sigmoid(0.5 (0.75 + 1)) = 1 - sigmoid(0.875) = 0.294215."""
    z0 = kto_reference_point(_t(-20, -15), _t(-21, -15.5))
    assert z0.item() == pytest.approx(0.75)
    losses, rew = kto_loss(_t(-10, -9), _t(-12, -8), z0, torch.tensor([True, False]), beta=0.5)
    assert losses.tolist() == pytest.approx([0.348645, 0.294215], abs=1e-6)
    assert rew.tolist() == pytest.approx([1.0, -0.5])  # beta * r
    # the weights scale each side's loss: lambda_y (1 - sigmoid(.))
    losses, _ = kto_loss(_t(-10, -9), _t(-12, -8), z0, torch.tensor([True, False]), beta=0.5, w_d=3.0, w_u=0.5)
    assert losses.tolist() == pytest.approx([3 * 0.348645, 0.5 * 0.294215], abs=1e-6)
    # a policy less likely than the reference on the mismatched pairs: the reference point is 0, not negative
    assert kto_reference_point(_t(-20.0), _t(-19.0)).item() == 0.0


def test_kto_mismatched_pairs_roll_the_batch():
    """Paired data split into desirable / undesirable rows (prompt ids 1.. , responses 10..): row i's mismatched
    pair is its prompt with row i-1's response, so desirable and undesirable responses both serve as y' (the
    old 'next row with another prompt' gave every row a desirable y'), and rows cut to T tokens."""
    rows = [dict(ids=[1, 10], n_prompt=1), dict(ids=[1, 11], n_prompt=1),      # prompt 1: up, down
            dict(ids=[2, 2, 20], n_prompt=2), dict(ids=[2, 2, 21, 22], n_prompt=2)]  # prompt 2: up, down
    assert kto_mismatched(rows, T=8) == [[1, 21, 22], [1, 10], [2, 2, 11], [2, 2, 20]]
    assert kto_mismatched(rows, T=2) == [[1, 21], [1, 10], [2, 2], [2, 2]]
    # z0 from the batch: the mismatched sequences' log-ratios 0.5, 1.5, -1.0, 3.0 -> mean 1.0
    assert kto_reference_point(_t(-9.5, -8.5, -12.0, -7.0), _t(-10, -10, -11, -10)).item() == pytest.approx(1.0)


def _pair_mean_rank(rank, init, losses_per_rank, out):
    """One DDP rank (gloo): a model y = w x, per-pair losses (w x_i - t_i)^2 on this rank's pairs, pair_mean."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model.module.weight.fill_(0.5)
    x, t = (torch.tensor(v) for v in zip(*losses_per_rank[rank]))
    losses = (model(x[:, None]).squeeze(1) - t) ** 2
    n_global = torch.tensor(float(len(x)))
    dist.all_reduce(n_global)
    pair_mean(losses, int(n_global.item()), 2).backward()
    if rank == 0:
        torch.save(model.module.weight.grad.clone(), out)
    dist.destroy_process_group()


def test_online_pair_mean_under_ddp_equals_one_process(tmp_path):
    """2 gloo processes keeping 3 and 1 pairs (online DPO drops ties, so counts differ): the DDP-averaged
    gradient is that of one process's mean over all 4 pairs (each rank's own mean would weight the lone
    pair 3x)."""
    import torch.multiprocessing as mp
    pairs = [[(1.0, 2.0), (2.0, 0.0), (3.0, 1.0)], [(4.0, 5.0)]]
    out = str(tmp_path / "grad.pt")
    mp.spawn(_pair_mean_rank, args=(f"file://{tmp_path}/init", pairs, out), nprocs=2)
    w = torch.full((1, 1), 0.5, requires_grad=True)
    x, t = (torch.tensor(v) for v in zip(*(pairs[0] + pairs[1])))
    pair_mean((w[0, 0] * x - t) ** 2, 4).backward()
    assert torch.load(out).item() == pytest.approx(w.grad.item(), abs=1e-6)
    # by hand: d/dw mean (w x - t)^2 = mean 2 x (w x - t) = (2(-1.5) + 4(1) + 6(0.5) + 8(-3)) / 4 = -5
    assert w.grad.item() == pytest.approx(-5.0)


def test_kto_gradient_direction():
    """Descending the loss raises a desirable response's log-prob and lowers an undesirable one's; no
    gradient reaches the reference point (z0 is detached)."""
    logps = torch.tensor([-10.0, -9.0], requires_grad=True)
    kl = torch.tensor([-20.0, -15.0], requires_grad=True)
    z0 = kto_reference_point(kl, _t(-21, -15.5))
    kto_loss(logps, _t(-12, -8), z0, torch.tensor([True, False]), beta=0.5)[0].sum().backward()
    assert logps.grad[0] < 0 < logps.grad[1] and kl.grad is None

# ----------------------------------------------------------------------------- the script

KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
        "logps/rejected")
FAST = ["--eval_repeats=1", "--n_print=1", "--batch_size=8"]


def args(reward_dir, sft_dir, out, *extra, items=200):
    fb = os.path.join(reward_dir, "feedback")
    return [f"--out_dir={out}", f"--sft_path={os.path.join(sft_dir, 'ckpt.pt')}",
            f"--data_path={os.path.join(fb, 'pairwise_train.jsonl')}", f"--max_items={items}",
            f"--val_path={small_test_pairs(reward_dir)}", *FAST, *extra]
    # 200 of the fixture's 4,812 pairs (the learning test: 4,800) and 150 of its ~600 held-out pairs: the
    # reference's precompute and each eval's held-out pairs took most of these tests' CI time


def test_smoke_and_online_reference_matches_precomputed(reward_dir, sft_dir, tmp_path):
    """Both reference modes, under bf16 with the fused head, from a checkpoint that asks for dropout: at
    step 0 every implicit reward and margin is 0 (online exactly: policy and reference log-probs by one call
    on one batch, dropout forced to 0; precomputed within bf16 rounding), and both modes see the same numbers."""
    ck = torch.load(os.path.join(sft_dir, "ckpt.pt"), weights_only=True)
    ck["model_args"] = {**ck["model_args"], "dropout": 0.3}
    save_checkpoint(str(tmp_path / "sft" / "ckpt.pt"), ck)
    outs = {}
    for mode in ("precompute", "online"):
        out = str(tmp_path / mode)
        p = run("dpo.py", *args(reward_dir, str(tmp_path / "sft"), out, "--max_iters=3", "--log_interval=1",
                                "--eval_interval=3", f"--ref_mode={mode}", "--dtype=bfloat16", "--fused_lm_head=True"))
        assert "dropout set to 0" in p.stdout
        outs[mode] = read_metrics(out)
        first_train = [r for r in outs[mode] if "loss" in r][0]  # logged from step 1's forward, before its update
        first_val = outs[mode][0]  # iter 0's held-out pairs
        for k in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
            if mode == "online":  # policy and reference in the same batch: the same numbers, bit for bit
                assert first_train[k] == 0 and first_val["val_" + k] == 0, (mode, k, first_train, first_val)
            else:  # the reference was scored in batches of 64, padded to their longest row: under bf16 another
                # shape can round another way (val_rewards/chosen 1e-05 on one fixture, 2026-12-02)
                assert abs(first_train[k]) < 1e-3 and abs(first_val["val_" + k]) < 1e-3, (k, first_train, first_val)
        assert first_train["loss"] == pytest.approx(math.log(2), abs=1e-5)  # (metrics are rounded to 5 digits)
    m = outs["precompute"]
    train = [r for r in m if "loss" in r]
    assert [r["iter"] for r in train] == [1, 2, 3] and all(k in train[0] for k in KEYS)
    ev = last_eval(str(tmp_path / "precompute"))
    assert ev["iter"] == 3 and all(k in ev for k in ("gold", "kl", "parse", "val_rewards/accuracies"))
    assert m[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # iter 0: the policy is the reference
    # at the first step the policy equals the reference: both modes see the same numbers
    on = [r for r in outs["online"] if "loss" in r]
    for k in KEYS:
        assert on[0][k] == pytest.approx(train[0][k], abs=1e-3), k
    model, vocab, ckpt = load_model(str(tmp_path / "precompute"))
    assert ckpt["iter_num"] == 3 and vocab is not None and not model.config.scalar_head


def test_bad_input(sft_dir, tmp_path):
    sft = f"--sft_path={os.path.join(sft_dir, 'ckpt.pt')}"
    p = run("dpo.py", sft, f"--out_dir={tmp_path}/o", f"--data_path={tmp_path}/missing.jsonl", ok=False)
    assert p.returncode != 0 and "python feedback.py" in p.stderr + p.stdout
    bad = tmp_path / "bad.jsonl"
    good = {"prompt": "Notes on the cafe: tea --, cake ++. Again: yes.", "chosen": " I loved the cake.<|endoftext|>",
            "rejected": " The cake was bad.<|endoftext|>"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    p = run("dpo.py", sft, f"--out_dir={tmp_path}/o", f"--data_path={bad}", ok=False)
    assert p.returncode != 0 and f"{bad}:2" in p.stderr and "rejected" in p.stderr
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({**good, "rejected": good["chosen"]}) + "\n")
    p = run("dpo.py", sft, f"--out_dir={tmp_path}/o", f"--data_path={same}", ok=False)
    assert p.returncode != 0 and "identical" in p.stderr
    p = run("dpo.py", sft, f"--out_dir={tmp_path}/o", f"--data_path={bad}", "--loss_type=kto2", ok=False)
    assert p.returncode != 0 and "sigmoid" in p.stderr + p.stdout


def test_resume(reward_dir, sft_dir, tmp_path):
    out = str(tmp_path / "r")
    run("dpo.py", *args(reward_dir, sft_dir, out, "--max_iters=2", "--eval_interval=2", "--log_interval=1"))
    run("dpo.py", *args(reward_dir, sft_dir, out, "--init_from=resume", "--max_iters=4", "--eval_interval=2",
                        "--log_interval=1", "--fused_lm_head=True"))  # (and the fused lm_head path runs)
    assert [r["iter"] for r in read_metrics(out) if "loss" in r] == [1, 2, 3, 4]
    assert load_model(out)[2]["iter_num"] == 4


def test_ddp_equals_one_process(reward_dir, sft_dir, tmp_path):
    """2 processes at 4 pairs each train exactly like 1 process at 8 pairs."""
    out, one = str(tmp_path / "ddp"), str(tmp_path / "one")
    run("dpo.py", *args(reward_dir, sft_dir, out, "--max_iters=3", "--eval_interval=3", "--log_interval=1",
                        "--batch_size=4"), torchrun=2)
    assert last_eval(out)["iter"] == 3 and load_model(out)[2]["iter_num"] == 3
    run("dpo.py", *args(reward_dir, sft_dir, one, "--max_iters=3", "--eval_interval=3", "--log_interval=1",
                        "--batch_size=8"))
    assert_same_weights(out, one)


def test_learns_builtin_task(reward_dir, sft_dir, tmp_path):
    """DPO (+ the RPO NLL term) on simulated preferences raises the held-out gold score above the SFT model's
    (iter 0 is the SFT model) without breaking the grammar."""
    out = str(tmp_path / "learn")
    run("dpo.py", *args(reward_dir, sft_dir, out, "--max_iters=150", "--eval_interval=150", "--log_interval=50",
                        "--rpo_alpha=1.0", items=4800), "--eval_repeats=4", "--batch_size=32")
    evals = [m for m in read_metrics(out) if "gold" in m]
    before, after = evals[0], evals[-1]
    print(f"gold {before['gold']:+.3f} -> {after['gold']:+.3f}, parse {before['parse']:.2f} -> {after['parse']:.2f}, "
          f"kl {after['kl']:.2f}")
    assert after["iter"] == 150
    assert after["gold"] > before["gold"] + 0.1
    assert after["parse"] > 0.8 and after["kl"] > 0


# ----------------------------------------------------------------------------- KTO, end to end
def kto_args(reward_dir, sft_dir, out, *extra, kind="binary"):
    fb = os.path.join(reward_dir, "feedback")
    return [f"--out_dir={out}", f"--sft_path={os.path.join(sft_dir, 'ckpt.pt')}", "--loss_type=kto",
            f"--data_path={os.path.join(fb, f'{kind}_train.jsonl')}", *FAST, *extra]


def test_kto_learns_from_thumbs(reward_dir, sft_dir, tmp_path):
    """KTO on the fixture's thumbs up / down (binary_train.jsonl, about a fifth up): the balanced weights are
    printed, step 0's implicit rewards are 0, the held-out thumbs (binary_test.jsonl) are evaluated, and the
    held-out gold score rises above the SFT model's."""
    out = str(tmp_path / "kto")
    p = run("dpo.py", *kto_args(reward_dir, sft_dir, out, "--max_iters=80", "--eval_interval=80", "--log_interval=1",
                                "--eval_repeats=4", "--batch_size=32"))
    assert "lambda_D n_D / (lambda_U n_U) = 1.000" in p.stdout, p.stdout
    m = read_metrics(out)
    first_train = [r for r in m if "loss" in r][0]
    assert first_train["rewards/chosen"] == first_train["rewards/rejected"] == 0  # step 0: the policy is the reference
    evals = [r for r in m if "gold" in r]
    before, after = evals[0], evals[-1]
    print(f"KTO: gold {before['gold']:+.3f} -> {after['gold']:+.3f}, accept_rate {before['accept_rate']:.3f} -> "
          f"{after['accept_rate']:.3f}, kl {after['kl']:.2f}, val accuracy {after['val_rewards/accuracies']:.3f}")
    assert after["iter"] == 80 and after["gold"] > before["gold"] + 0.1 and after["accept_rate"] > before["accept_rate"]
    assert after["val_rewards/margins"] > 0 and after["val_rewards/accuracies"] > 0.6


def test_kto_on_pairs_and_ddp(reward_dir, sft_dir, tmp_path):
    """KTO reads pairs too (chosen desirable, rejected undesirable: lambda_D = lambda_U n_U / n_D = 2 at
    lambda_U 2); under DDP its mismatched pairs are rolled over the whole batch and its reference point is the
    mean over every rank's, so 2 processes at 4 rows train like 1 at 8."""
    out, one = str(tmp_path / "ddp"), str(tmp_path / "one")
    common = ["--max_iters=3", "--eval_interval=3", "--log_interval=1", "--max_items=200", "--undesirable_weight=2"]
    p = run("dpo.py", *kto_args(reward_dir, sft_dir, out, *common, "--batch_size=4", kind="pairwise"), torchrun=2)
    assert "200 desirable, 200 undesirable; lambda_D 2.000, lambda_U 2: lambda_D n_D / (lambda_U n_U) = 1.000" \
        in p.stdout, p.stdout
    run("dpo.py", *kto_args(reward_dir, sft_dir, one, *common, "--batch_size=8", kind="pairwise"))
    assert_same_weights(out, one)


@pytest.mark.parametrize("rows, extra, message", [
    ([dict(prompt="Notes on the cafe: tea --, cake ++. Again: yes.", completion=" The cake was good.<|endoftext|>", label=True),
      dict(prompt="Notes on the hotel: bed ++, view -. Again: no.", completion=" The bed was great.<|endoftext|>", label=True)], ["--loss_type=kto"],
     r"^error: KTO needs thumbs up and thumbs down, but all 2 rows are up \(.*all_up\.jsonl\)\. add rows"),
    ([dict(prompt="Notes on the cafe: tea --, cake ++. Again: yes.", completion=" The cake was good.<|endoftext|>", label=True)], [],
     r"^error: unpaired rows \(thumbs up / down\): only KTO trains on them \(.*\)\. pass --loss_type=kto$"),
    ([dict(prompt="Notes on the cafe: tea --, cake ++. Again: yes.", chosen=" The cake was good.<|endoftext|>", rejected=" The cake was bad.<|endoftext|>")],
     ["--val_path=/nonexistent/val.jsonl"], r"^error: no preference data \(/nonexistent/val\.jsonl\)"),  # (was: no eval)
    ([dict(prompt="Notes on the cafe: tea --, cake ++. Again: yes.", completion=" The cake was good.<|endoftext|>", label=True)],
     ["--loss_type=kto", "--desirable_weight=-1"], r"^error: --desirable_weight=-1\.0: must be >= 0$"),
])
def test_kto_bad_input(sft_dir, tmp_path, rows, extra, message):
    import re
    path = tmp_path / "all_up.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = run("dpo.py", f"--sft_path={os.path.join(sft_dir, 'ckpt.pt')}", f"--out_dir={tmp_path}/o",
            f"--data_path={path}", *extra, ok=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and re.search(message, lines[0]), p.stderr


def test_ties_are_skipped_and_counted(sft_dir, tmp_path):
    """A tie has no chosen: DPO skips tie rows and says how many; a file of only ties is refused with one line."""
    sft = f"--sft_path={os.path.join(sft_dir, 'ckpt.pt')}"
    rows = [{"prompt": "Notes on the cafe: tea --, cake ++. Again: yes.", "chosen": f" I loved the {n}.<|endoftext|>",
             "rejected": " The cake was bad.<|endoftext|>", "tie": i % 3 == 0} for i, n in enumerate(["tea", "music"] * 6)]
    mixed, ties = tmp_path / "mixed.jsonl", tmp_path / "ties.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ties.write_text("".join(json.dumps({**r, "tie": True}) + "\n" for r in rows))
    p = run("dpo.py", sft, f"--out_dir={tmp_path}/m", f"--data_path={mixed}", "--max_iters=1", "--batch_size=4",
            "--eval_repeats=1")
    assert "skipped 4 ties" in p.stdout and "8 training rows" in p.stdout, p.stdout
    p = run("dpo.py", sft, f"--out_dir={tmp_path}/t", f"--data_path={ties}", ok=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "12 were ties: DPO has no tie outcome" in p.stderr
