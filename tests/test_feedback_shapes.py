"""Feedback of every shape trains (issue 32): thumbs and ratings with one response per prompt train reward.py
directly and are evaluated row by row (accuracy, AUC, Spearman); ties are ties (pairwise losses skip and count
them, Rao-Kupper trains on them); a file that cannot teach anything is refused with one line; no NaN reaches or
leaves a reward checkpoint. Worked examples in-process, then a few tiny runs of the real script."""
import json
import math
import os

import pytest
import torch

import common
import data
import feedback_data
import rewards
import task
from conftest import read_metrics, run
from model import score_sequences
from reward_losses import auc, mse_loss, ordinal_cuts, ordinal_init, ordinal_loss, thumbs_loss

t = torch.tensor


def write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def one_per_prompt(n=120):
    """(prompt, response, gold) for n distinct built-in prompts, one demonstration each."""
    out, seen = [], set()
    for p, c in task.demos(4000, seed=3):
        if p not in seen and len(out) < n:
            seen.add(p)
            out.append((p, c, task.gold(p, c)))
    return out


# ----------------------------------------------------------------------------- worked examples
def test_thumbs_loss_worked_example():
    """P(up) = sigmoid(r): r = 0 labelled up costs log 2; r = log 3 labelled down, -log(1 - 3/4) = log 4."""
    assert thumbs_loss(t([0.0, math.log(3)]), t([1, 0])).item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert thumbs_loss(t([math.log(3)]), t([1])).item() == pytest.approx(-math.log(0.75))


def test_auc_worked_example():
    """up scores {0.9, 0.5}, down {0.1, 0.5}: of the 4 (up, down) pairs 3 are ordered and 1 tied: 3.5 / 4."""
    assert auc(t([0.9, 0.1, 0.5, 0.5]), t([1, 0, 1, 0])) == pytest.approx(0.875)
    assert auc(t([0.1, 0.9]), t([1, 0])) == 0.0  # every up below every down
    assert math.isnan(auc(t([0.1, 0.9]), t([1, 1])))  # one label: no pairs to rank


def test_float_ratings_regression_and_ordinal_bins():
    """mse: the rating 4.5 centres to 2 * 3.5 / 4 - 1 = 0.75, so r = 0 costs 0.5625. ordinal: a float rating
    is binned to the nearest level (2.5 -> 3: -log(sigmoid(0.5) - sigmoid(-0.5)) = 1.406829 at the even cuts)."""
    assert mse_loss(t([0.0]), t([4.5])).item() == pytest.approx(0.5625)
    cuts = ordinal_cuts(ordinal_init())
    assert ordinal_loss(t([0.0]), t([2.5]), cuts).item() == pytest.approx(1.406829, abs=1e-5)
    assert ordinal_loss(t([0.3]), t([4.4]), cuts).item() == pytest.approx(ordinal_loss(t([0.3]), t([4]), cuts).item())
    assert ordinal_loss(t([0.3]), t([4.6]), cuts).item() == pytest.approx(ordinal_loss(t([0.3]), t([5]), cuts).item())


def test_ties_skipped_and_counted_float_ratings_read(tmp_path):
    ok = dict(prompt="p", chosen="a", rejected="b")
    rows = [ok, dict(ok, tie=True), dict(ok, tie=False), dict(ok, rejected="a"), dict(ok, tie=True)]
    items, skipped = feedback_data.load_feedback(write(tmp_path, "mixed.jsonl", rows), "pairwise")
    assert len(items) == 2 and sum(s.endswith(feedback_data.TIE) for s in skipped) == 2 and len(skipped) == 3
    items, _ = feedback_data.load_feedback(write(tmp_path, "t.jsonl", [dict(ok, tie=False)] + rows[1:3]), "ties")
    assert [it["y"] for it in items] == [False, True, False]  # Rao-Kupper keeps them
    with pytest.raises(ValueError, match=r"only ties \(2 of 2 rows.*only_ties.jsonl"):
        feedback_data.load_feedback(write(tmp_path, "only_ties.jsonl", [dict(ok, tie=True)] * 2), "pairwise")
    with pytest.raises(ValueError, match=r"tie must be true or false.*bad_tie.jsonl:1"):
        feedback_data.load_feedback(write(tmp_path, "bad_tie.jsonl", [dict(ok, tie="yes")]), "pairwise")
    lik = [dict(prompt="p", completion="a", score=3.5), dict(prompt="q", completion="b", score=1)]
    assert [it["y"] for it in feedback_data.load_feedback(write(tmp_path, "f.jsonl", lik), "likert")[0]] == [3.5, 1]
    for bad in (5.5, True, float("nan")):
        with pytest.raises(ValueError, match=r"score must be a number in \[1, 5\]"):
            feedback_data.load_feedback(write(tmp_path, "b.jsonl", [dict(lik[0], score=bad)]), "likert")
    assert feedback_data.to_pairs(feedback_data.load_feedback(write(tmp_path, "f.jsonl", lik), "likert")[0], "likert") == []
    asp = [dict(prompt="p", completion="a", scores=dict(opinion=2.5, fluency=4))]
    assert feedback_data.load_feedback(write(tmp_path, "a.jsonl", asp), "aspects", "opinion")[0][0]["y"] == 2.5


def test_uninformative_files():
    up = [dict(y=True), dict(y=True)]
    assert "all 2 thumbs are up" in feedback_data.uninformative(up, "binary")
    assert feedback_data.uninformative(up + [dict(y=False)], "binary") is None
    assert "all 2 ratings are 3" in feedback_data.uninformative([dict(y=3), dict(y=3.0)], "likert")
    assert feedback_data.uninformative([dict(y=3), dict(y=3.5)], "likert") is None
    assert "all 1 rows are ties" in feedback_data.uninformative([dict(y=True)], "ties", "rao_kupper")
    assert feedback_data.uninformative([dict(y=True), dict(y=False)], "ties") is None


def test_reward_model_with_nan_gain_is_refused(sft_dir, tmp_path):
    ck = torch.load(os.path.join(sft_dir, "ckpt.pt"), weights_only=False)
    ck.update(reward_gain=float("nan"), reward_bias=0.0)
    common.save_checkpoint(str(tmp_path / "rm.pt"), ck)
    with pytest.raises(ValueError, match=r"rm.pt: the reward model's gain / bias are not finite"):
        rewards.load_reward_model(str(tmp_path / "rm.pt"), ck.get("vocab"), "cpu")


# ----------------------------------------------------------------------------- the script
def train(sft_dir, tmp_path, name, data_path, *args, ok=True):
    return run("reward.py", f"--out_dir={tmp_path}/{name}", f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={data_path}",
               "--max_iters=20", "--eval_interval=20", "--log_interval=10", "--n_norm=8", "--n_eval=1", *args, ok=ok)


def final(out_dir):
    return [m for m in read_metrics(out_dir) if "label_kind" in m][-1]  # the final eval's line


def finite_checkpoint(out_dir):
    ck = torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=False)
    return math.isfinite(ck["reward_gain"]) and math.isfinite(ck["reward_bias"])


def test_one_thumb_per_prompt_trains(sft_dir, tmp_path):
    rows = one_per_prompt()
    median = sorted(g for _, _, g in rows)[len(rows) // 2]
    path = write(tmp_path, "thumbs.jsonl", [dict(prompt=p, completion=c, label=g >= median) for p, c, g in rows])
    train(sft_dir, tmp_path, "rm", path, "--label_kind=binary")
    m = final(f"{tmp_path}/rm")
    assert "spearman_gold_rows" in m and "acc_noisy" not in m, m  # one response per prompt: no pairs, no pair metrics
    assert finite_checkpoint(f"{tmp_path}/rm")
    # the metrics are those of the saved model on the held-out last 10% of the file: P(up) = sigmoid(raw reward)
    model, vocab, _ = common.load_model(f"{tmp_path}/rm", scalar_head=True)
    tok, held = data.Tokenizer(vocab), rows[-(len(rows) // 10):]
    with torch.no_grad():
        r = score_sequences(model.eval(), [(tok.encode(p) + tok.encode(c))[:model.config.block_size]
                                           for p, c, _ in held], tok.eot)
    up = t([float(g >= median) for _, _, g in held])
    assert m["acc_thumbs"] == pytest.approx(((r > 0).float() == up).float().mean().item(), abs=1e-4)  # (5 digits)
    assert m["auc_thumbs"] == pytest.approx(auc(r, up), abs=1e-4)


def test_one_float_rating_per_prompt_trains(sft_dir, tmp_path):
    rows = one_per_prompt()
    assert all(-3 < g < 1.5 for _, _, g in rows)  # so 3 + g / 1.5, a float rating in (1, 4), ranks as gold does
    path = write(tmp_path, "ratings.jsonl", [dict(prompt=p, completion=c, score=3 + g / 1.5) for p, c, g in rows])
    train(sft_dir, tmp_path, "rm", path, "--label_kind=likert", "--loss_type=ordinal")
    m = final(f"{tmp_path}/rm")
    assert "acc_noisy" not in m and m["spearman_rating"] == pytest.approx(m["spearman_gold_rows"], abs=1e-6), m
    assert finite_checkpoint(f"{tmp_path}/rm")


def test_mixed_ties_file_skips_and_counts(sft_dir, tmp_path):
    rows = one_per_prompt(40)
    pairs = [dict(prompt=p, chosen=c, rejected=" I would go again.<|endoftext|>", tie=i % 4 == 0)
             for i, (p, c, _) in enumerate(rows) if c != " I would go again.<|endoftext|>"]
    path = write(tmp_path, "mixed.jsonl", pairs)
    n_ties = sum(r["tie"] for r in pairs)
    p = train(sft_dir, tmp_path, "rm", path, "--max_iters=2", "--eval_interval=2")
    assert f"({n_ties} ties; --label_kind=ties trains on them)" in p.stdout, p.stdout


@pytest.mark.parametrize("case", ["all_up", "ties_only", "n_norm_1"])
def test_files_that_teach_nothing_are_refused(sft_dir, tmp_path, case):
    rows = one_per_prompt(30)
    if case == "all_up":
        args = [write(tmp_path, "up.jsonl", [dict(prompt=p, completion=c, label=True) for p, c, _ in rows]),
                "--label_kind=binary"]
        message = "all 30 thumbs are up"
    elif case == "ties_only":
        args = [write(tmp_path, "ties.jsonl", [dict(prompt=p, chosen=c, rejected=c + " ", tie=True) for p, c, _ in rows])]
        message = "only ties (30 of 30 rows"
    else:
        args = [write(tmp_path, "ratings.jsonl", [dict(prompt=p, completion=c, score=1 + i % 5) for i, (p, c, _)
                                                  in enumerate(rows)]), "--label_kind=likert", "--n_norm=1"]
        message = "--n_norm=1"
    p = train(sft_dir, tmp_path, "rm", *args, ok=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert message in p.stderr and not os.path.exists(f"{tmp_path}/rm/ckpt.pt"), p.stderr
