"""kl_estimators.py: every sampled KL estimator against the exact KL, on worked examples with known numbers
(Schulman 2020's estimators; the gradients of Tang & Munos 2025), and logged by ppo.py and grpo.py."""
import math

import pytest
import torch

import kl_estimators
from conftest import read_metrics, run

P, REF = (0.5, 0.5), (0.8, 0.2)  # a two-token vocabulary: the policy, the reference
KL = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)  # exact KL(pi || ref) = 0.22314


def _compare(ys, old):
    """compare() on one-token responses ys, the policy P and the reference REF at every one, sampled from `old`."""
    n = len(ys)
    logits = torch.log(torch.tensor(P)).expand(n, 1, 2)
    ref_logits = torch.log(torch.tensor(REF)).expand(n, 1, 2)
    labels = torch.tensor(ys).view(n, 1)
    old_logp = torch.log(torch.tensor([old[y] for y in ys])).view(n, 1)
    return kl_estimators.compare(logits, ref_logits, labels, old_logp)


def test_on_policy_worked_example():
    """Sampled from pi itself, one response per token (each has probability 1/2): the means are exact
    expectations. k1 and k3 are unbiased (0.22314), k2 is not ((0.4700^2 + 0.9163^2) / 4 = 0.26513).
    Gradients in each response's logits (per response, over B = 2), from d/dz log pi(y) = onehot(y) - pi:
    the exact KL's is pi_i (log pi_i / ref_i - KL) = (-0.34657, 0.34657) in both; k1's, (0.5, -0.5) and
    (-0.5, 0.5), is orthogonal to it (cos 0; it averages to 0 over y, as Tang & Munos say) and 0.5 / 0.34657
    = 1.4427 as long; k2's, d (onehot(y) - pi) = (-0.235, 0.235) and (-0.458, 0.458), has cos 0.95189 and
    ratio 1.0505 (its mean over y is the exact one: only the one-sample noise remains); k3's, (1 - r)
    (onehot(y) - pi) = (-0.3, 0.3) in both, is the forward KL(ref || pi)'s pi - ref: cos 1 here (a two-token
    vocabulary has one direction), 0.3 / 0.34657 = 0.86562 as long."""
    out = _compare([0, 1], P)
    assert out["exact"] == pytest.approx(KL, abs=1e-6) and KL == pytest.approx(0.22314, abs=1e-5)
    assert out["k1"] == pytest.approx(KL, abs=1e-6) and out["k3"] == pytest.approx(KL, abs=1e-6)
    assert out["k3_is"] == pytest.approx(KL, abs=1e-6)  # pi = pi_old: the correction is 1
    assert out["k2"] == pytest.approx(0.26513, abs=1e-5)
    g0 = 0.5 * (math.log(0.5 / 0.2) - KL)  # the exact gradient's entries, +-0.34657
    assert g0 == pytest.approx(0.34657, abs=1e-5)
    assert out["k1_grad_cos"] == pytest.approx(0.0, abs=1e-6) and out["k1_grad_ratio"] == pytest.approx(0.5 / g0, abs=1e-5)
    # k2's rows, over B: d (onehot(y) - pi) / 2 = (-a, a) and (-b, b), the exact's (-g0 / 2, g0 / 2) in both
    a, b = -0.25 * math.log(0.5 / 0.8), 0.25 * math.log(0.5 / 0.2)
    assert out["k2_grad_cos"] == pytest.approx((a + b) / (math.sqrt(2) * math.hypot(a, b)), abs=1e-5)
    assert out["k2_grad_ratio"] == pytest.approx(math.sqrt(2) * math.hypot(a, b) / g0, abs=1e-5)
    assert (out["k2_grad_cos"], out["k2_grad_ratio"]) == pytest.approx((0.95189, 1.05054), abs=1e-4)
    assert out["k3_grad_cos"] == pytest.approx(1.0, abs=1e-6)
    assert out["k3_grad_ratio"] == pytest.approx(0.3 / g0, abs=1e-5) and 0.3 / g0 == pytest.approx(0.86562, abs=1e-4)
    # the error spread: k1 says -0.4700 and 0.9163 where the truth is 0.22314 both times
    assert out["k1_err_sd"] == pytest.approx(math.sqrt(2) * (0.9163 - KL), abs=1e-3)


def test_off_policy_only_the_corrected_k3_is_unbiased():
    """Sampled from pi_old = REF (4 of 5 responses say token 0), while pi = P: k1 = (4 x -0.4700 + 0.9163) / 5
    = -0.19274 and k3 = (4 x 0.12996 + 0.31629) / 5 = 0.16723 are off the truth 0.22314; k3_is, weighted
    by pi / pi_old (0.625, 2.5), is exact: (4 x 0.081225 + 0.79073) / 5."""
    out = _compare([0, 0, 0, 0, 1], REF)
    assert out["exact"] == pytest.approx(KL, abs=1e-6)
    assert out["k1"] == pytest.approx(-0.19274, abs=1e-4)
    assert out["k3"] == pytest.approx(0.16723, abs=1e-4)
    assert out["k3_is"] == pytest.approx(KL, abs=1e-5)


def test_masked_tokens_count_nowhere():
    """A position past a response's end (label -100) adds nothing to any estimate or gradient."""
    n = 2
    logits = torch.log(torch.tensor(P)).expand(n, 2, 2).clone()
    ref_logits = torch.log(torch.tensor(REF)).expand(n, 2, 2).clone()
    logits[:, 1] = torch.tensor([5.0, -5.0])  # junk after the end
    labels = torch.tensor([[0, -100], [1, -100]])
    old_logp = torch.log(torch.tensor([[0.5, 0.3], [0.5, 0.3]]))
    assert kl_estimators.compare(logits, ref_logits, labels, old_logp) == pytest.approx(_compare([0, 1], P), abs=1e-6)


def test_summary_splits_epochs():
    rows = [(0, {"k3": 1.0}), (1, {"k3": 2.0, "c": 1.0}), (2, {"k3": 4.0}), (0, {"k3": 3.0})]
    assert kl_estimators.summary(rows) == {"kl_est/e1/k3": 2.0, "kl_est/e2+/k3": 3.0, "kl_est/e2+/c": 1.0}
    assert kl_estimators.summary(rows[:1]) == {"kl_est/e1/k3": 1.0}


@pytest.mark.parametrize("stage", ["ppo", "grpo"])
def test_stages_log_the_estimators(stage, sft_dir, reward_dir, tmp_path):
    """Two iterations of 2 update epochs: every estimator's value, error spread and gradient agreement in
    metrics.jsonl for epoch 1 and for the later ones, none of them on the printed line. In epoch 1 the
    corrected k3 is k3 (pi = pi_old, up to the rounding of two forwards), and the KL is non-negative."""
    out = str(tmp_path / stage)
    if stage == "ppo":
        p = run("ppo.py", f"--sft_path={sft_dir}", f"--reward_path={reward_dir}", f"--out_dir={out}", "--max_iters=2",
                "--eval_interval=2", "--batch_size=16", "--ppo_epochs=2", "--n_print=0")
    else:
        p = run("grpo.py", f"--sft_path={sft_dir}/ckpt.pt", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2",
                "--log_interval=1", "--prompts_per_batch=4", "--group_size=4", "--minibatch_size=8", "--ppo_epochs=2",
                "--n_print=0")
    rows = [m for m in read_metrics(out) if "kl_est/e1/exact" in m]
    assert len(rows) == 2, read_metrics(out)
    first, second = rows
    assert first["kl_est/e1/exact"] == 0 and first["kl_est/e1/k3"] == 0  # pi = ref: no KL, no gradient
    assert "kl_est/e1/k3_grad_cos" not in first
    for m, epochs in ((first, ("e2+",)), (second, ("e1", "e2+"))):
        for e in epochs:
            assert m[f"kl_est/{e}/exact"] > 0
            for k in kl_estimators.ESTIMATORS:
                for what in ("", "_err_sd", "_grad_cos", "_grad_ratio"):
                    assert math.isfinite(m[f"kl_est/{e}/{k}{what}"]), (e, k, what)
        assert m["kl_est/e1/k3_is"] == pytest.approx(m["kl_est/e1/k3"], rel=1e-3, abs=1e-6)
    assert "kl_est" not in p.stdout
