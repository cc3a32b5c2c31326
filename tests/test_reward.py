"""Tests for reward.py: each loss at hand-computed values, the evaluation helpers, the simulated
labelers, bad feedback files, and the script itself (smoke, learning, other kinds, DDP, resume)."""
import json
import math
import os
import random
import shutil

import pytest
import torch

import data
import feedback_data
import audit
import feedback
import labelers
import reward
import task
from common import load_model
from conftest import assert_same_weights, last_eval, read_metrics, run

t = torch.tensor

PC = "Notes on the cafe: coffee ++. Again: yes."  # a prompt, and reviews of it at gold 1.0 and -1.15
GREAT = " The coffee was great. I would go again.<|endoftext|>"
AWFUL = " The coffee was awful. The tea was bad. The cake was bad. The staff was bad. I would not go again.<|endoftext|>"


# ----------------------------------------------------------------------------- losses, worked examples
def test_soft_bt_worked_example():
    """Soft labels: q = 1 is Bradley-Terry; a 2-1 vote (q = 2/3) at d = 0 costs log 2, and is cheapest,
    the entropy of (2/3, 1/3) = 0.6365, where sigmoid(d) = 2/3 (d = log 2), not at d -> infinity."""
    r_c, r_r = torch.tensor([2.0, 0.0]), torch.tensor([1.5, 0.0])
    assert reward.soft_bt_loss(r_c, r_r, torch.ones(2)).item() == pytest.approx(reward.bt_loss(r_c, r_r).item())
    q = torch.tensor([2 / 3])
    assert reward.soft_bt_loss(torch.zeros(1), torch.zeros(1), q).item() == pytest.approx(math.log(2), abs=1e-6)
    d = torch.tensor([math.log(2)], requires_grad=True)
    loss = reward.soft_bt_loss(d, torch.zeros(1), q)
    loss.backward()
    assert loss.item() == pytest.approx(0.6365, abs=1e-4) and abs(d.grad.item()) < 1e-6


def test_bt_worked_example_and_gradient():
    rc, rr = t([1.0], requires_grad=True), t([1.5])
    loss = reward.bt_loss(rc, rr)
    assert torch.sigmoid(t(-0.5)).item() == pytest.approx(0.3775, abs=1e-4)  # P(chosen wins)
    assert loss.item() == pytest.approx(0.9741, abs=1e-4)  # -log 0.3775
    loss.backward()
    assert rc.grad.item() == pytest.approx(torch.sigmoid(t(-0.5)).item() - 1, abs=1e-6)  # sigmoid(delta) - 1


def test_margin_and_hinge():
    # Llama 2: -log sigmoid(1 - 0 - 1) = log 2; without the margin -log sigmoid(1) = 0.3133
    assert reward.bt_loss(t([1.0]), t([0.0]), t([1.0])).item() == pytest.approx(math.log(2), abs=1e-6)
    assert reward.bt_loss(t([1.0]), t([0.0])).item() == pytest.approx(0.313262, abs=1e-6)
    # hinge: max(0, 1 - (1 - 1.5)) = 1.5 and max(0, 1 - (3 - 1)) = 0, mean 0.75
    assert reward.hinge_loss(t([1.0, 3.0]), t([1.5, 1.0]), 1.0).item() == pytest.approx(0.75)


def test_plackett_luce():
    # r = [2, 1, 0] best first: [lse(2,1,0) - 2] + [lse(1,0) - 1] + 0 = 0.407606 + 0.313262
    assert reward.plackett_luce_loss(t([[2.0, 1.0, 0.0]])).item() == pytest.approx(0.720868, abs=1e-5)
    # K = 2 is Bradley-Terry
    a, b = torch.randn(5), torch.randn(5)
    assert reward.plackett_luce_loss(torch.stack([a, b], 1)).item() == pytest.approx(reward.bt_loss(a, b).item(), abs=1e-6)
    # a ranking of 2 padded to 3 equals the unpadded one; padding values don't matter
    padded = reward.plackett_luce_loss(t([[1.0, 0.0, 99.0]]), t([[True, True, False]]))
    assert padded.item() == pytest.approx(reward.bt_loss(t([1.0]), t([0.0])).item(), abs=1e-6)
    # PL probabilities of all 6 orders of 3 items sum to 1
    from itertools import permutations
    r = t([0.3, -1.2, 0.8])
    total = sum(math.exp(-reward.plackett_luce_loss(r[list(o)][None]).item()) for o in permutations(range(3)))
    assert total == pytest.approx(1.0, abs=1e-5)


def test_all_pairs():
    # pairs (2,1), (2,0), (1,0): softplus(-1), softplus(-2), softplus(-1), mean
    assert reward.all_pairs_loss(t([[2.0, 1.0, 0.0]])).item() == pytest.approx((2 * 0.313262 + 0.126928) / 3, abs=1e-5)


def test_rao_kupper():
    a, b = torch.randn(6), torch.randn(6)
    no = torch.zeros(6, dtype=torch.bool)
    # alpha = 0 (theta = 1) with no ties is Bradley-Terry
    assert reward.rao_kupper_loss(a, b, no, t(0.0)).item() == pytest.approx(reward.bt_loss(a, b).item(), abs=1e-6)
    # theta = 2, equal rewards: P(win) = 1 / (1 + 2) and P(tie) = (4 - 1) / (1 + 2)^2, both 1/3
    z = torch.zeros(1)
    assert reward.rao_kupper_loss(z, z, t([True]), t(math.log(2))).item() == pytest.approx(math.log(3), abs=1e-5)
    assert reward.rao_kupper_loss(z, z, t([False]), t(math.log(2))).item() == pytest.approx(math.log(3), abs=1e-5)
    # win + loss + tie = 1 for any d
    d, al = t([0.7]), t(0.4)
    p = sum(math.exp(-reward.rao_kupper_loss(x, y, t([tie]), al).item())
            for x, y, tie in ((d, z, False), (z, d, False), (d, z, True)))
    assert p == pytest.approx(1.0, abs=1e-5)


def test_likert_losses():
    # scores 5 and 3 map to targets 1 and 0: MSE of r = [0, 0] is (1 + 0) / 2
    assert reward.mse_loss(t([0.0, 0.0]), t([5, 3])).item() == pytest.approx(0.5)
    cuts = t([-1.5, -0.5, 0.5, 1.5])
    # r = 0, score 3: -log(sigmoid(0.5) - sigmoid(-0.5)) = -log(0.2449187) = 1.406829
    assert reward.ordinal_loss(t([0.0]), t([3]), cuts).item() == pytest.approx(1.406829, abs=1e-5)
    p = sum(math.exp(-reward.ordinal_loss(t([0.3]), t([k]), cuts).item()) for k in range(1, 6))
    assert p == pytest.approx(1.0, abs=1e-5)


def test_ordinal_initial_cuts_are_even_and_centred():
    """The learned cut points start at [-1.5, -0.5, 0.5, 1.5] (not the lopsided [-0.75, -0.17, 0.65,
    1.79] a naive softplus sum gives): an untrained reward of 0 spreads its mass evenly, symmetric."""
    cuts = reward.ordinal_cuts(reward.ordinal_init())
    assert cuts.tolist() == pytest.approx([-1.5, -0.5, 0.5, 1.5], abs=1e-6)
    p = [math.exp(-reward.ordinal_loss(t([0.0]), t([k]), cuts).item()) for k in range(1, 6)]
    assert p == pytest.approx(p[::-1], abs=1e-6) and max(p) < 0.25
    # any raw parameters give increasing cuts
    assert (reward.ordinal_cuts(torch.tensor([0.3, -5.0, 2.0, -1.0])).diff() > 0).all()


def test_normalisation_gain_and_bias():
    # raw (1, 2, 3, 4): mean 2.5, sample std sqrt(5/3) = 1.290994; gain 1/std, bias -2.5 gain
    gain, bias = reward.normalisation(t([1.0, 2.0, 3.0, 4.0]))
    assert gain == pytest.approx(1 / math.sqrt(5 / 3), abs=1e-6) and bias == pytest.approx(-2.5 * gain, abs=1e-6)
    z = gain * t([1.0, 2.0, 3.0, 4.0]) + bias
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6) and z.std().item() == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------- evaluation helpers
def test_spearman():
    assert audit.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert audit.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: ranks [0, 1.5, 1.5, 3] vs [0, 1, 2, 3] -> 4.5 / sqrt(4.5 * 5)
    assert audit.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert audit.spearman([1, 1, 1], [1, 2, 3]) == 0.0  # constant: no correlation


def test_reliability():
    rows, ece = reward.reliability([0.1, 0.3, 0.9, 0.95], [0, 1, 1, 1], n_bins=2)
    assert [(r[2], r[3], r[4]) for r in rows] == [pytest.approx((0.2, 0.5, 2)), pytest.approx((0.925, 1.0, 2))]
    assert ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.075)


# ----------------------------------------------------------------------------- simulated labelers
def test_label_group_formats_and_sharp_labelers():
    prompt = PC  # gold 1.0, -1.15 and -0.15: Likert 5, 1 and 3
    responses = [GREAT, AWFUL, " The cake was okay.<|endoftext|>", GREAT]  # one duplicate
    rows, agree = labelers.label_group(prompt, responses, random.Random(0), n_annotators=3, temp=0.01,
                                     tie_margin=0.1, noise=0.01)
    g = {r: task.gold(prompt, r) for r in responses}
    assert len(rows["pairwise"]) == 3 and len(rows["ties"]) == 3  # 3 unique responses -> 3 pairs
    assert all(g[r["chosen"]] > g[r["rejected"]] and r["margin"] == 1.0 for r in rows["pairwise"])
    assert not any(r["tie"] for r in rows["ties"])
    assert rows["rankings"][0]["ranking"] == sorted(set(responses), key=lambda r: -g[r])
    assert [r["score"] for r in rows["likert"]] == [5, 1, 3]
    assert agree["pairwise"] == [9, 9]  # 3 pairs x 3 annotator pairs, all agree
    # very noisy labelers disagree sometimes, and ties appear when gold scores are close
    rows, agree = labelers.label_group(prompt, [" The cake was good.<|endoftext|>", " The cake was nice.<|endoftext|>"],
                                     random.Random(0), n_annotators=3, temp=10.0, tie_margin=0.15)
    assert rows["ties"][0]["tie"]  # the file's fields (write_jsonl leaves out the "_" ones: votes, gold)
    assert {k for k in rows["pairwise"][0] if not k.startswith("_")} == {"prompt", "chosen", "rejected", "margin"}


def test_anchor_groups():
    """feedback.py --anchor_path: the last n // 2 responses of every group are the anchor's."""
    assert feedback.mix_groups(list("abcdefgh"), list("ABCDEFGH"), 4) == list("abCDefGH")
    assert feedback.mix_groups(list("abcdef"), list("ABCDEF"), 3) == list("abCdeF")


def test_thumbs_up_or_down():
    """Binary feedback: P(up) = Phi((gold - 0.5) / 0.3); a response at gold 1 is accepted 95% of the time, at
    0.5 half the time. The majority of 3 per distinct response, TRL's unpaired rows; read back as a kind of
    its own, and compared as pairs of an accepted over a rejected response to the same prompt."""
    assert task.accept_probability(PC, GREAT) == pytest.approx(0.5 * (1 + math.erf((1 - 0.5) / (0.3 * math.sqrt(2)))))  # 0.9522
    assert task.accept_probability(PC, " The coffee was good. I would go again.<|endoftext|>") == pytest.approx(0.5)
    ups = sum(labelers.label_binary(1.0, random.Random(i)) for i in range(4000)) / 4000
    assert ups == pytest.approx(0.9522, abs=0.015)
    rows, agree = _binary_rows()
    assert [r["label"] for r in rows] == [True, False] and set(rows[0]) == {"prompt", "completion", "label"}
    assert agree[1] == 6  # two distinct responses x 3 annotator pairs


def _binary_rows():
    return labelers.label_binary_group(PC, [GREAT, AWFUL, GREAT], random.Random(0), 3)


def test_binary_files_read_back(tmp_path):
    rows, _ = _binary_rows()
    path = write(tmp_path, "binary.jsonl", rows)
    assert feedback_data.detect_kind(path) == "binary"
    items, skipped = feedback_data.load_feedback(path, "binary")
    assert [it["y"] for it in items] == [True, False] and not skipped
    assert feedback_data.to_pairs(items, "binary") == [(PC, rows[0]["completion"], rows[1]["completion"])]


def test_labeler_pool():
    """make_pool splits n people by the shares (largest remainders); each type judges as documented; a
    pool larger than n_annotators sends each pair to n_annotators different people, recorded with their votes."""
    assert labelers.make_pool("careful:0.6,noisy:0.1,verbose:0.1,adversarial:0.2", 10) == \
        ["careful"] * 6 + ["noisy", "verbose", "adversarial", "adversarial"]
    # quotas 2.25, 2.25, 0.5: floors 2, 2, 0 and the one seat left to the largest remainder (rounding each
    # quota would seat 4); 0.6 and 0.4 of one person: the larger share; listed in LABELER_TYPES' order
    assert labelers.make_pool("verbose:0.1,noisy:0.45,careful:0.45", 5) == ["careful"] * 2 + ["noisy"] * 2 + ["verbose"]
    assert labelers.make_pool("noisy:0.4,careful:0.6", 1) == ["careful"]
    assert sorted(map(labelers.make_pool("careful:0.5,adversarial:0.5", 3).count, ("careful", "adversarial"))) == [1, 2]
    for bad in ("careful:0.5", "careful:1.2,noisy:-0.2", "sloppy:1.0", "careful:x"):
        with pytest.raises(labelers.UserError):
            labelers.make_pool(bad, 10)
    # a is clearly better: careful people say a, adversarial ones say b; a long b wins over a verbose
    # labeler once the bonus outweighs the gold difference (0.1 x 20 words > 1.0), a glowing b over a
    # positive one once 0.3 x praise does (0.3 x (3 - -1) > 1.0); each bias alone leaves the others alike
    rng = lambda: random.Random(0)
    a, b = (1.0, 5, -1.0), (0.0, 5, -1.0)  # (gold, words, praise)
    assert labelers.vote("careful", a, b, rng(), 0.01) is True
    assert labelers.vote("adversarial", a, b, rng(), 0.01) is False
    assert labelers.vote("verbose", a, (0.0, 25, -1.0), rng(), 0.01) is False
    assert labelers.vote("verbose", a, (0.0, 5, 3.0), rng(), 0.01) is True
    assert labelers.vote("positive", a, (0.0, 5, 3.0), rng(), 0.01) is False
    assert labelers.vote("positive", a, (0.0, 25, -1.0), rng(), 0.01) is True
    assert labelers.vote("positive", a, (0.0, 5, 2.0), rng(), 0.01) is True  # 0.3 x 3 < 1.0
    noisy = sum(labelers.vote("noisy", (0.1, 5, 0), (0.0, 5, 0), random.Random(i), 0.25) for i in range(2000)) / 2000
    careful = sum(labelers.vote("careful", (0.1, 5, 0), (0.0, 5, 0), random.Random(i), 0.25) for i in range(2000)) / 2000
    assert 0.5 < noisy < careful  # sigmoid(0.1) = 0.52 vs sigmoid(0.4) = 0.60
    pool = ["careful"] * 3 + ["adversarial"] * 2
    rows, _ = labelers.label_group(PC, [GREAT, AWFUL], random.Random(0), 3, 0.01, pool=pool)
    who = [w for w, _ in rows["pairwise"][0]["_votes"]]
    assert len(set(who)) == 3 and all(v == (pool[w] == "careful") for w, v in rows["pairwise"][0]["_votes"])


# ----------------------------------------------------------------------------- bad input
def write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(p)


def test_bad_feedback(tmp_path, sft_dir):
    ok = dict(prompt="p", chosen="a", rejected="b")
    items, skipped = feedback_data.load_feedback(write(tmp_path, "pairs.jsonl", [ok, dict(ok, rejected="a"), ok]), "pairwise")
    assert len(items) == 2 and len(skipped) == 1 and "pairs.jsonl:2" in skipped[0]  # identical: counted skip
    items, skipped = feedback_data.load_feedback(write(tmp_path, "rank.jsonl", [dict(prompt="p", ranking=["a", "b", "a"]),
                                                                          dict(prompt="p", ranking=["a", "b"])]), "rankings")
    assert len(items) == 1 and "rank.jsonl:1" in skipped[0]  # duplicates in a ranking: counted skip
    path = write(tmp_path, "lik.jsonl", [dict(prompt="p", completion="a", score=3), dict(prompt="p", completion="a", score=6)])
    with pytest.raises(ValueError, match=r"score must be a number in \[1, 5\], got 6 \(.*lik.jsonl:2\)"):
        feedback_data.load_feedback(path, "likert")
    with pytest.raises(ValueError, match=r"missing field.*\(.*miss.jsonl:2\)"):
        feedback_data.load_feedback(write(tmp_path, "miss.jsonl", [ok, dict(prompt="p", chosen="a")]), "pairwise")
    with pytest.raises(ValueError, match=r"tie must be true or false.*\(.*tie.jsonl:1\)"):
        feedback_data.load_feedback(write(tmp_path, "tie.jsonl", [dict(ok, tie="yes")]), "ties")
    with pytest.raises(ValueError, match=r"no usable rows.*only.jsonl"):
        feedback_data.load_feedback(write(tmp_path, "only.jsonl", [dict(ok, rejected="a")]), "pairwise")
    # the script says which file and line
    p = run("reward.py", f"--out_dir={tmp_path}/o", f"--sft_path={sft_dir}/ckpt.pt", "--label_kind=likert",
            f"--data_path={path}", ok=False)
    assert p.returncode != 0 and "lik.jsonl:2" in p.stderr


def test_to_pairs_and_detect_kind(tmp_path):
    items = [dict(prompt="p", texts=[c], y=s) for c, s in (("a", 2), ("b", 5), ("c", 2))] + \
            [dict(prompt="q", texts=["d"], y=1)]
    assert sorted(feedback_data.to_pairs(items, "likert")) == [("p", "b", "a"), ("p", "b", "c")]
    assert feedback_data.to_pairs([dict(prompt="p", texts=["a", "b", "c"], y=None)], "rankings") == \
        [("p", "a", "b"), ("p", "a", "c"), ("p", "b", "c")]
    assert feedback_data.to_pairs([dict(prompt="p", texts=["a", "b"], y=True)], "ties") == []
    assert feedback_data.detect_kind(write(tmp_path, "r.jsonl", [dict(prompt="p", ranking=["a", "b"])])) == "rankings"


# ----------------------------------------------------------------------------- the script
def test_smoke_and_learning(reward_dir, sft_dir):
    """The reward_dir fixture's run: files, checkpoint contract, and a reward model that learned."""
    for kind in data.FEEDBACK_KINDS:
        for split in ("train", "test"):
            rows = data.read_jsonl(os.path.join(reward_dir, "feedback", f"{kind}_{split}.jsonl"))
            assert rows and all(r["prompt"] in task.prompts(split) for r in rows)
    pair = data.read_jsonl(os.path.join(reward_dir, "feedback", "pairwise_train.jsonl"))[0]
    assert set(pair) - {"_where"} == {"prompt", "chosen", "rejected", "margin"} and pair["chosen"].endswith("<|endoftext|>")
    rm, vocab, ckpt = load_model(os.path.join(reward_dir, "ckpt.pt"), scalar_head=True)
    assert {"model", "model_args", "optimizer", "iter_num", "config", "vocab", "reward_gain", "reward_bias",
            "label_kind"} <= set(ckpt) and ckpt["label_kind"] == "pairwise" and ckpt["reward_gain"] > 0
    assert vocab == load_model(os.path.join(sft_dir, "ckpt.pt"))[1]
    m = last_eval(reward_dir, "spearman")
    for k in ("acc_noisy", "acc_gold", "ece", "length_acc_gold", "length_acc_noisy", "reward_gain", "reward_bias", "reward"):
        assert k in m
    fb = read_metrics(os.path.join(reward_dir, "feedback"))[0]  # feedback.py's report
    for k in ("agreement/pairwise", "agreement/fleiss_kappa", "train/labels_acc_gold", "test/labels_acc_gold",
              "train/audit_max_agreement", "train/prompts_with_cycles", "repeats/likert_agreement", "n_binary"):
        assert k in fb, k
    assert 0.6 < fb["test/labels_acc_gold"] < 1 and 0.9 < fb["train/audit_max_agreement"] <= 1
    assert any("reliability" in x for x in read_metrics(reward_dir))
    # learning: held-out accuracy against gold well above chance and above the length-only reward
    assert m["acc_gold"] > 0.65 and m["acc_gold"] > m["length_acc_gold"] + 0.05, m
    assert m["spearman"] > 0.3, m
    first = [x for x in read_metrics(reward_dir) if "acc_gold" in x][0]
    assert m["acc_gold"] > first["acc_gold"] + 0.1  # it learned, from about chance at iter 0


@pytest.mark.parametrize("kind,loss", [("pairwise", "margin"), ("pairwise", "hinge"), ("pairwise", "soft"),
                                       ("rankings", "pl"), ("rankings", "pairs"), ("ties", "rao_kupper"),
                                       ("likert", "mse"), ("likert", "ordinal"), ("binary", "logistic")])
def test_every_loss_learns(reward_dir, sft_dir, tmp_path, kind, loss):
    """Each loss, end to end on its kind's file from the fixture (as user data would be), learns: held-out
    accuracy against gold rises from the untrained head's ~0.5 to well above it (bt: test_smoke_and_learning)."""
    fb = os.path.join(reward_dir, "feedback")
    # Likert, binary: one response per item; margin, soft: harder targets (binary 0.66, soft 0.78 at 80 steps
    # here); hinge, its unit margin fitted from a near-zero start: 0.552 at 40 steps, 0.617 at 80 (fused AdamW)
    # ties (Rao-Kupper): 0.560 at 40 steps on the 4-round fixture, a hair under the bar
    n = 80 if kind in ("likert", "binary", "ties") or loss in ("margin", "soft", "hinge") else 40
    run("reward.py", f"--out_dir={tmp_path}", f"--sft_path={sft_dir}/ckpt.pt", f"--label_kind={kind}", f"--loss_type={loss}",
        f"--data_path={fb}/{kind}_train.jsonl", f"--test_path={fb}/pairwise_test.jsonl", f"--max_iters={n}",
        f"--log_interval={n}", f"--eval_interval={n}", "--warmup_iters=5", "--n_norm=16", "--n_eval=1",
        "--max_new_tokens=16")
    evals = [m for m in read_metrics(str(tmp_path)) if "acc_gold" in m]
    first, last = evals[0], evals[-1]
    print(f"{kind}/{loss}: acc_gold {first['acc_gold']:.3f} -> {last['acc_gold']:.3f}")
    assert first["iter"] == 0 and abs(first["acc_gold"] - 0.5) < 0.1  # the untrained head: chance
    assert last["label_kind"] == kind and last["loss_kind"] == loss
    assert last["acc_gold"] > 0.56, (first, last)  # 300 test pairs: chance is 0.5 +- 0.03
    assert load_model(str(tmp_path), scalar_head=True)[2]["label_kind"] == kind


def test_ddp_equals_one_process(reward_dir, sft_dir, tmp_path):
    """2 processes at batch 8 train exactly like 1 process at batch 16 (ties: the Rao-Kupper tie parameter
    is all-reduced by hand, the model by DDP)."""
    fb = os.path.join(reward_dir, "feedback")
    common = [f"--sft_path={sft_dir}/ckpt.pt", "--label_kind=ties", f"--data_path={fb}/ties_train.jsonl",
              f"--test_path={fb}/pairwise_test.jsonl", "--max_iters=4", "--log_interval=2", "--eval_interval=1000",
              "--n_norm=16", "--n_eval=1"]
    run("reward.py", f"--out_dir={tmp_path}/ddp", *common, "--batch_size=8", torchrun=2)
    assert load_model(f"{tmp_path}/ddp", scalar_head=True)[2]["iter_num"] == 4
    run("reward.py", f"--out_dir={tmp_path}/one", *common, "--batch_size=16")
    assert_same_weights(f"{tmp_path}/ddp", f"{tmp_path}/one")


def test_resume(reward_dir, tmp_path):
    out = str(tmp_path / "r")
    shutil.copytree(reward_dir, out)
    n = load_model(out, scalar_head=True)[2]["iter_num"]
    sft = load_model(out, scalar_head=True)[2]["config"]["sft_path"]
    run("reward.py", f"--out_dir={out}", "--init_from=resume", f"--sft_path={sft}", f"--data_path={out}/feedback",
        f"--max_iters={n + 4}",
        "--log_interval=2", "--eval_interval=1000", "--n_norm=16", "--n_eval=1")
    ckpt = load_model(out, scalar_head=True)[2]
    assert ckpt["iter_num"] == n + 4 and ckpt["optimizer"]["state"]


def test_sampled_text_with_merged_punctuation_encodes():
    """A compact-vocabulary model can write '.' twice; GPT-2's BPE reads that back as '..', not in the vocabulary."""
    tok = data.Tokenizer(task.vocab())
    ids = tok.encode(" The cake was good..<|endoftext|>")
    assert tok.decode(ids) == " The cake was good..<|endoftext|>" and ids[-3] == ids[-2] == tok.encode(".")[0]


def test_one_line_rankings_file(sft_dir, tmp_path):
    """Seed 000's example: one prompt, five answers ranked 3 > 1 > 2 > 5 > 4, one line of a rankings file
    (indices, best first). Too small to hold anything out: it trains and evaluates on that line, says so,
    and the reward model recovers the order (all 10 pairs right)."""
    answers = [" The coffee was good.<|endoftext|>", " The coffee was okay.<|endoftext|>",
               " The coffee was great.<|endoftext|>", " The coffee was awful.<|endoftext|>",
               " The coffee was bad.<|endoftext|>"]
    path = write(tmp_path, "one.jsonl", [dict(prompt=PC, responses=answers, ranking=[2, 0, 1, 4, 3])])
    out = str(tmp_path / "o")
    p = run("reward.py", f"--out_dir={out}", f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={path}",
            "--label_kind=rankings", "--max_iters=60", "--batch_size=1", "--eval_interval=1000", "--n_norm=8")
    assert "too few to hold 10% out" in p.stdout
    assert last_eval(out, "acc_noisy")["acc_noisy"] == 1.0


# ----------------------------------------------------------------------------- aspects: a reward model per criterion
def test_aspects_sum_to_gold():
    """gold's parts (task.aspects) sum to gold exactly: on 3,000 demonstrations and on 20,000 random strings
    of the grammar's words (unparsable, repeated, unfinished, over-long, empty)."""
    rng = random.Random(0)
    words = ["The", "cake", "was", "good", ".", "I", "loved", "the", "very", "not", "and", "<|endoftext|>", "awful",
             "would", "go", "again"]
    cases = task.demos(3000) + [(rng.choice(task.all_prompts()), " " + " ".join(rng.choice(words) for _ in
                                range(rng.randint(0, 30)))) for _ in range(20000)]
    assert all(abs(sum(task.aspects(p, r).values()) - task.gold(p, r)) < 1e-12 for p, r in cases)
    a = task.aspects(PC, " The coffee was great. The coffee was great. The wine was bad.")  # wine: not noted
    assert a == pytest.approx(dict(completeness=0.3, faithfulness=0.5, recommendation=0, hallucination=-0.15,
                                   fluency=-0.25, brevity=-0.6))  # unfinished, and 3 sentences for 1 note + 1


def test_aspect_ratings():
    """1-5 per aspect, linear from worst to best of task.ASPECTS."""
    f = [labelers.label_aspect(v, "faithfulness", random.Random(0), 0.0) for v in (-0.5, -0.25, 0, 0.25, 0.5)]
    assert f == [1, 2, 3, 4, 5]
    assert [labelers.label_aspect(v, "brevity", random.Random(0), 0.0) for v in (-1, -0.75, -0.5, 0, -3)] == [1, 2, 3, 5, 1]
    rows, agree = labelers.label_aspect_group(PC, [" The cake was great.<|endoftext|>"], random.Random(0), 3, noise=0.0)
    assert rows == [dict(prompt=PC, completion=" The cake was great.<|endoftext|>",  # a thing not in the notes
                         scores=dict(completeness=1, faithfulness=3, recommendation=3, hallucination=4, fluency=5,
                                     brevity=5))] and agree == [18, 18]


@pytest.fixture(scope="module")
def aspect_rms(reward_dir, sft_dir, tmp_path_factory):
    """Two small reward models from the fixture's per-aspect ratings: faithfulness and recommendation."""
    out = tmp_path_factory.mktemp("aspects")
    for a in ("faithfulness", "recommendation"):
        run("reward.py", f"--out_dir={out}/{a}", f"--sft_path={sft_dir}/ckpt.pt", "--label_kind=aspects", f"--aspect={a}",
            f"--data_path={reward_dir}/feedback", "--max_iters=150", "--log_interval=150", "--eval_interval=1000",
            "--warmup_iters=5", "--n_norm=32", "--n_eval=2", "--max_new_tokens=24")
    return str(out)


def test_aspect_reward_models_learn_their_aspect(aspect_rms):
    """Each model ranks fresh samples by its own aspect (Spearman with the true value), stores its aspect."""
    for a in ("faithfulness", "recommendation"):
        m = last_eval(f"{aspect_rms}/{a}", "spearman")
        print(f"{a}: spearman_aspect {m['spearman_aspect']:.3f}, spearman with gold {m['spearman']:.3f}")
        assert m["spearman_aspect"] > 0.3, m
        assert load_model(f"{aspect_rms}/{a}", scalar_head=True)[2]["aspect"] == a


def test_aspect_weights(aspect_rms, reward_dir, sft_dir, tmp_path):
    """--aspect_weights by name (in any order) or by position; the one-line errors of a bad spec; ppo.py runs
    on the weighted sum and reports gold's parts."""
    from configurator import UserError
    from rewards import load_reward_models
    vocab = load_model(sft_dir)[1]
    s, b = f"{aspect_rms}/faithfulness", f"{aspect_rms}/recommendation"
    got = load_reward_models(f"{s},{b}", vocab, "cpu", "recommendation:0.5,faithfulness:2")
    assert [(p.weight, p.aspect) for p in got.parts] == [(2.0, "faithfulness"), (0.5, "recommendation")] and got.path == s
    assert [p.weight for p in load_reward_models(f"{s},{b}", vocab, "cpu", "1,0.25").parts] == [1.0, 0.25]
    for spec, message in (("taste:1,faithfulness:1,recommendation:1", "aspect 'taste' is not in the reward models"),
                          ("faithfulness:1", "gives no weight to"), ("1", "1 weights for 2 reward models"),
                          ("faithfulness:x,recommendation:1", "the weight is not a number")):
        with pytest.raises(UserError, match=message):
            load_reward_models(f"{s},{b}", vocab, "cpu", spec)
    with pytest.raises(UserError, match="no rating of aspect 'taste'"):
        feedback_data.load_feedback(f"{reward_dir}/feedback/aspects_train.jsonl", "aspects", "taste")
    p = run("reward.py", f"--out_dir={tmp_path}/x", f"--data_path={reward_dir}/feedback", "--label_kind=aspects", ok=False)
    assert p.returncode == 2 and "needs --aspect=NAME" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    out = str(tmp_path / "ppo")
    run("ppo.py", f"--out_dir={out}", f"--sft_path={sft_dir}", f"--reward_path={s},{b}",
        "--aspect_weights=faithfulness:1,recommendation:1", "--max_iters=2", "--eval_interval=2", "--batch_size=16",
        "--n_minibatches=2", "--eval_repeats=1", "--n_print=0")
    ev = last_eval(out, "gold/faithfulness")
    assert ev["gold"] == pytest.approx(sum(ev[f"gold/{a}"] for a in task.ASPECTS), abs=1e-3)
    # grpo.py's 'rm' reward is the same weighted sum, the weights following the paths: faithfulness x 2 +
    # recommendation x 0.5 in either order scores the first batch (the same samples: same seed) alike
    firsts = []
    for name, paths, weights in (("ab", f"{s},{b}", "2,0.5"), ("ba", f"{b},{s}", "0.5,2")):
        run("grpo.py", f"--out_dir={tmp_path}/{name}", f"--sft_path={sft_dir}/ckpt.pt", f"--reward_path={paths}",
            f"--aspect_weights={weights}", "--reward_fns=rm", "--max_iters=1", "--eval_interval=1000",
            "--log_interval=1", "--prompts_per_batch=4", "--group_size=4", "--minibatch_size=8", "--n_print=0")
        firsts.append([m for m in read_metrics(f"{tmp_path}/{name}") if "reward_std" in m][0])
    assert firsts[0]["reward"] == pytest.approx(firsts[1]["reward"], abs=1e-5) and firsts[0]["reward_std"] > 0
