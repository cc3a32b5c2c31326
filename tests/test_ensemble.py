"""Reward-model ensembles (reward.py --ensemble, --reward_ensemble in the RL stages and best-of-N) and the
over-optimisation fits (experiments/overopt.py): objectives at hand-computed values, the fits on synthetic
points with known coefficients, an ensemble that trains (its members differ), resumes exactly and is read
back as one reward, and the bad input."""
import json
import math
import os

import numpy as np
import pytest
import torch

import common
from configurator import UserError
from conftest import assert_same_weights, read_metrics, run, small_test_pairs
from experiments import overopt
from model import GPT, GPTConfig, score_sequences
from rewards import RewardEnsemble, ensemble_reward, load_reward_model


# ----------------------------------------------------------------------------- the objectives, by hand
def test_objectives_hand_computed():
    """Three members, two responses: member scores (1, 3, 5) and (2, 2, 2). Mean 3 and 2; worst 1 and 2;
    std (K - 1 in the denominator) sqrt(((1-3)^2 + 0 + (5-3)^2) / 2) = 2 and 0, so mean - 0.5 std = 2 and 2:
    the agreed-on response ties the disputed one whose average is a point higher."""
    s = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    assert ensemble_reward(s, "mean").tolist() == [3.0, 2.0]
    assert ensemble_reward(s, "worst").tolist() == [1.0, 2.0]
    assert ensemble_reward(s, "uncertainty", 0.5).tolist() == pytest.approx([2.0, 2.0])
    assert ensemble_reward(s, "uncertainty", 0.0).tolist() == pytest.approx([3.0, 2.0])
    with pytest.raises(ValueError, match="unknown ensemble objective"):
        ensemble_reward(s, "median")


def test_reward_ensemble_normalises_each_member_then_combines():
    """RewardEnsemble: member k's score is gain_k * raw_k + bias_k, then the objective; score_sequences
    reads it like one reward model (gain 1, bias 0), and its spread is the members' std."""
    torch.manual_seed(0)
    cfg = dict(block_size=16, vocab_size=11, n_layer=1, n_head=1, n_embd=8, dropout=0.0, scalar_head=True)
    members = [GPT(GPTConfig(**cfg)).eval() for _ in range(3)]
    gains, biases = [1.0, 2.0, 0.5], [0.0, -1.0, 3.0]
    seqs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    with torch.no_grad():
        each = torch.stack([score_sequences(m, seqs, 0, g, b) for m, g, b in zip(members, gains, biases)])
        for obj in ("mean", "worst", "uncertainty"):
            ens = RewardEnsemble(members, gains, biases, obj, coef=0.7)
            got = score_sequences(ens, seqs, 0)
            assert torch.allclose(got, ensemble_reward(each, obj, 0.7), atol=1e-6), obj
        assert torch.allclose(score_sequences(ens, seqs, 0, forward=ens.spread), each.std(0), atol=1e-6)
        assert torch.allclose(score_sequences(ens, seqs, 0, forward=ens.mean_score), each.mean(0), atol=1e-6)


# ----------------------------------------------------------------------------- Gao et al.'s fits
@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.8, 0.3), ("rl", 0.9, 0.45)])
def test_gao_fit_recovers_known_coefficients(form, alpha, beta):
    """Points on R(d) = d (alpha - beta d) (best-of-N) or d (alpha - beta log d) (RL), plus small noise,
    give back alpha and beta, R^2 near 1, and the peak of the form: alpha / (2 beta) or exp(alpha / beta - 1)."""
    rng = np.random.default_rng(0)
    d = np.linspace(0, 4, 40)
    y = overopt.gao_curve(d, alpha, beta, form) + rng.normal(0, 0.01, d.shape)
    a, b, r2, peak = overopt.fit_gao(d, y, form)
    assert a == pytest.approx(alpha, abs=0.02) and b == pytest.approx(beta, abs=0.02) and r2 > 0.99
    assert peak == pytest.approx(alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1), rel=0.1)
    # exact points: exact coefficients; the forms at d = 0 are 0 (d log d -> 0)
    a, b, r2, _ = overopt.fit_gao(d, overopt.gao_curve(d, alpha, beta, form), form)
    assert (a, b) == (pytest.approx(alpha, abs=1e-9), pytest.approx(beta, abs=1e-9)) and r2 == pytest.approx(1.0)
    assert overopt.gao_features([0.0], form).tolist() == [[0.0, 0.0]]
    # a curve that never turns (beta < 0): no finite peak
    assert overopt.fit_gao(d, overopt.gao_curve(d, 0.5, -0.1, form), form)[3] == float("inf")


def test_overopt_tables_from_runs(tmp_path):
    """experiments/overopt.py on hand-made metrics of one seed: the fits' table, one row per method and objective."""
    s = tmp_path / "s1"
    for obj in ("single", "worst"):
        (s / f"bon_{obj}").mkdir(parents=True)
        (s / f"bon_{obj}" / "done").touch()
        with open(s / f"bon_{obj}" / "metrics.jsonl", "w") as f:
            for n in (1, 2, 4, 8, 16):
                kl = math.log(n) - (n - 1) / n
                d = math.sqrt(kl)
                f.write(json.dumps(dict(n=n, kl=kl, reward=d, gold=0.1 + d * (0.8 - 0.3 * d), parse=1.0)) + "\n")
    p = run("-m", "experiments.overopt", f"--root={tmp_path}", "--figure=")
    assert "| best-of-N | single | 0.800 | 0.300 | 1.000 |" in p.stdout and "| best-of-N | worst |" in p.stdout
    p = run("-m", "experiments.overopt", f"--root={tmp_path}/none", ok=False)
    assert p.returncode == 2 and "no s<seed>/ folders" in p.stderr and "Traceback" not in p.stderr


# ----------------------------------------------------------------------------- an ensemble, trained
def ens_args(reward_dir, sft_dir, out, *extra):
    return (f"--out_dir={out}", f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={reward_dir}/feedback",
            "--ensemble=2", "--eval_interval=1000", "--log_interval=5", "--n_norm=32", "--n_eval=1",
            "--max_items=600", f"--test_path={small_test_pairs(reward_dir)}", *extra)


@pytest.fixture(scope="module")
def ensemble_dir(reward_dir, sft_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ens"))
    run("reward.py", *ens_args(reward_dir, sft_dir, out, "--max_iters=80", "--lr=1e-3"))  # (short: a higher lr)
    return out


def test_ensemble_trains_members_differ_and_loads_as_one(ensemble_dir, sft_dir):
    """Two members from the same SFT start: different heads, bootstrap samples and batches, so different
    weights and scores; the eval reports each member's accuracy, their correlation and spread; loaded,
    the ensemble is one reward that combines its members' normalised scores by the objective asked for
    ('worst' their min, below their mean where they differ; 'uncertainty' mean - coef x std), and a 'single'
    reading (member 0 alone) is still possible for tools that ignore the members."""
    ck = torch.load(os.path.join(ensemble_dir, "ckpt.pt"), weights_only=True)
    assert len(ck["members"]) == 1 and "reward_gain" in ck and "reward_gain" in ck["members"][0]
    a, b = ck["model"], ck["members"][0]["model"]
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) > 1e-3
    final = [m for m in read_metrics(ensemble_dir) if "spearman" in m][-1]
    assert len(final["member_acc_gold"]) == 2 and all(x > 0.55 for x in final["member_acc_gold"])
    assert final["acc_gold"] > 0.55 and final["member_corr"] < 0.999 and final["ensemble_std"] > 0.01
    vocab = common.load_model(sft_dir)[1]
    seqs = [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11, 12]]
    got = {}
    for obj in ("mean", "worst", "uncertainty"):
        rm = load_reward_model(ensemble_dir, vocab, "cpu", objective=obj, coef=1.0)
        assert isinstance(rm.model, RewardEnsemble) and (rm.gain, rm.bias) == (1.0, 0.0)
        with torch.no_grad():
            got[obj] = score_sequences(rm.model, seqs, 0)
            each = torch.stack([score_sequences(m, seqs, 0, g.item(), b.item())  # (K, N): member k's gain, bias
                                for m, g, b in zip(rm.model.members, rm.model.gain.flatten(), rm.model.bias.flatten())])
    assert len(each) == 2 and torch.allclose(got["mean"], each.mean(0), atol=1e-5)
    assert torch.allclose(got["worst"], each.min(0).values, atol=1e-5)
    assert torch.allclose(got["uncertainty"], each.mean(0) - 1.0 * each.std(0), atol=1e-5)
    assert (got["worst"] < got["mean"] - 1e-4).any()  # the members differ on these sequences


def test_ensemble_resumes_exactly(reward_dir, sft_dir, tmp_path):
    """20 steps straight = 10 steps, then resumed to 20: every member's weights (bootstrap pools are fixed by
    the seed, the batches by the saved data order). Batches of 8: exactness does not need the default 32."""
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    run("reward.py", *ens_args(reward_dir, sft_dir, whole, "--max_iters=20", "--eval_interval=10", "--batch_size=8"))
    run("reward.py", *ens_args(reward_dir, sft_dir, cut, "--max_iters=10", "--batch_size=8"))
    run("reward.py", *ens_args(reward_dir, sft_dir, cut, "--max_iters=20", "--init_from=resume", "--batch_size=8"))
    assert_same_weights(whole, cut)
    a, b = (torch.load(os.path.join(d, "ckpt.pt"), weights_only=True)["members"][0]["model"] for d in (whole, cut))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3
    p = run("reward.py", *ens_args(reward_dir, sft_dir, cut, "--max_iters=30", "--init_from=resume", "--batch_size=8"),
            "--ensemble=3", ok=False)
    assert p.returncode == 2 and "holds 2 reward models, --ensemble=3" in p.stderr


def test_rl_stages_and_best_of_n_read_the_ensemble(ensemble_dir, sft_dir, tmp_path):
    """PPO, GRPO and best-of-N take --reward_ensemble; their evals log the members' spread and mean. For
    K = 2, min(a, b) = (a + b) / 2 - |a - b| / 2 and the sample std is |a - b| / sqrt(2): best-of-N's
    'worst' reward is exactly reward_mean - ensemble_std / sqrt(2), averaged over the picked samples."""
    run("ppo.py", f"--out_dir={tmp_path}/ppo", f"--sft_path={sft_dir}/ckpt.pt", f"--reward_path={ensemble_dir}",
        "--reward_ensemble=uncertainty", "--uncertainty_coef=0.5", "--max_iters=1", "--eval_interval=1",
        "--batch_size=8", "--n_minibatches=2", "--eval_repeats=1")
    last = [m for m in read_metrics(f"{tmp_path}/ppo") if m.get("split") == "test"][-1]
    assert last["ensemble_std"] > 0 and last["reward"] < last["reward_mean"]  # the penalty is paid
    run("grpo.py", f"--out_dir={tmp_path}/grpo", f"--sft_path={sft_dir}/ckpt.pt", f"--reward_path={ensemble_dir}",
        "--reward_fns=rm", "--reward_ensemble=worst", "--max_iters=1", "--eval_interval=1", "--prompts_per_batch=2",
        "--group_size=4", "--minibatch_size=8", "--eval_repeats=1")
    assert "ensemble_std" in [m for m in read_metrics(f"{tmp_path}/grpo") if "gold" in m][-1]
    run("sample.py", f"--init_from={sft_dir}", f"--reward_path={ensemble_dir}", "--reward_ensemble=worst",
        "--best_of=4", "--max_prompts=8", f"--out_dir={tmp_path}/bon")
    rows = read_metrics(f"{tmp_path}/bon")
    assert [r["n"] for r in rows] == [1, 2, 4] and all(r["ensemble_std"] > 1e-3 for r in rows)
    for r in rows:  # (metrics are rounded to 5 places)
        assert r["reward"] == pytest.approx(r["reward_mean"] - r["ensemble_std"] / math.sqrt(2), abs=1e-4), r


def test_bad_input(reward_dir, sft_dir, tmp_path):
    """One line, exit status 2: an ensemble objective on a single reward model, a negative coefficient,
    K < 1, and an ensemble objective without a reward model to combine (GRPO on gold)."""
    ppo = lambda *a: run("ppo.py", f"--out_dir={tmp_path}/p", f"--sft_path={sft_dir}/ckpt.pt",
                         f"--reward_path={reward_dir}", "--max_iters=1", *a, ok=False)
    for p, msg in [(ppo("--reward_ensemble=worst"), "needs an ensemble of K >= 2 reward models; this checkpoint holds one"),
                   (ppo("--reward_ensemble=uncertainty", "--uncertainty_coef=-1"), "--uncertainty_coef=-1.0: must be >= 0"),
                   (ppo("--reward_ensemble=median"), "reward_ensemble"),
                   (run("reward.py", f"--out_dir={tmp_path}/r", f"--sft_path={sft_dir}/ckpt.pt", "--ensemble=0", ok=False),
                    "--ensemble=0: must be >= 1"),
                   (run("grpo.py", f"--out_dir={tmp_path}/g", f"--sft_path={sft_dir}/ckpt.pt", "--reward_ensemble=worst",
                        ok=False), "has no 'rm' reward")]:
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr[-500:]
    with pytest.raises(UserError, match="holds one"):
        load_reward_model(reward_dir, common.load_model(sft_dir)[1], "cpu", objective="worst")
