"""Tests for monitors.py (reward-hacking monitors, no gold) and the early stop: worked examples of each signal,
the onset rule against a brute-force reading of its words over every case of a small space, --stop_on's
parsing and refusals, then the stages: ppo.py keeps exactly the policy before the alarm, grpo.py stops at
its first batches, reward.py's halves and the range of scores it stores."""
import itertools
import json
import os

import pytest
import torch

import data
import labelers
import monitors
from configurator import UserError
from conftest import read_metrics, run
from experiments.monitors import SIGNALS, choose, first_alarm, gold_kept, moving_average, report
from model import GPT, GPTConfig


# ----------------------------------------------------------------------------- the signals
def test_slope_worked_examples():
    assert monitors.slope([]) == 0 and monitors.slope([3.0]) == 0
    assert monitors.slope([0, 1, 2]) == pytest.approx(1.0)
    assert monitors.slope([1, 1, 1]) == pytest.approx(0.0)
    # x mean 1.5, y mean 1.5: sum (x - mx)(y - my) = 2.25 - 0.25 - 0.25 + 2.25 = 4, sum (x - mx)^2 = 5
    assert monitors.slope([0, 2, 1, 3]) == pytest.approx(0.8)


def test_ood_fraction_and_judge_agreement():
    assert monitors.ood_fraction(torch.tensor([0.0, 1.0, 2.0, 3.0]), 1.5) == 0.5
    assert monitors.ood_fraction(torch.tensor([1.5]), 1.5) == 0.0  # at the top of the range is inside it
    # pair 1: judge a (log-odds > 0), reward model a: agree; pair 2: judge b, RM a: disagree; pair 3: judge a,
    # RM b: disagree; pair 4: the judge cannot read it (None); pair 5: the reward model ties. 1 of 3 counted
    lo = [2.0, -1.0, 0.5, None, 1.0]
    a, b = [1.0, 3.0, 0.0, 1.0, 2.0], [0.0, 1.0, 1.0, 0.0, 2.0]
    assert monitors.judge_agreement(lo, a, b) == pytest.approx(1 / 3)
    assert monitors.judge_agreement([None], [1.0], [0.0]) is None
    assert monitors.group_pairs(list("aaabb")) == [(0, 1), (1, 2), (3, 4)]
    assert monitors.group_pairs(list("abc")) == []
    assert len(monitors.group_pairs(list("a" * 200), limit=64)) == 64


def test_trend_monitors_and_resume():
    t = monitors.Tracker()
    first = monitors.trend_monitors(t, 0.0, 2.0, 10.0)
    assert first["monitor/kl_rate"] == 0 and first["monitor/entropy_ratio"] == 1 and first["monitor/len_ratio"] == 1
    seq = [(1.0, 1.5, 12.0), (2.0, 1.0, 15.0), (4.0, 0.5, 20.0)]
    outs = [monitors.trend_monitors(t, *x) for x in seq]
    assert outs[-1]["monitor/kl_rate"] == pytest.approx(monitors.slope([0.0, 1.0, 2.0, 4.0]))  # = 1.3
    assert outs[-1]["monitor/entropy_ratio"] == pytest.approx(0.25) and outs[-1]["monitor/len_ratio"] == 2.0
    assert all(k.startswith("cost/") or k.startswith("monitor/") for k in outs[-1])
    # a resumed run (Tracker from the checkpoint's state) goes on alike; the window keeps KL_WINDOW values
    r = monitors.Tracker(**t.state())
    for x in [(5.0, 0.5, 20.0), (9.0, 0.4, 21.0)]:
        assert monitors.trend_monitors(r, *x)["monitor/kl_rate"] == monitors.trend_monitors(t, *x)["monitor/kl_rate"]
    assert t.kls == [1.0, 2.0, 4.0, 5.0, 9.0]


# ----------------------------------------------------------------------------- the onset rule
def onset_by_the_words(gold, proxy, drop=0.1, patience=2):
    """Issue 35's rule read literally: the first log t such that each of logs t .. t + patience - 1 has gold more
    than `drop` below the best gold so far while the proxy is above its value at (the first log of) that best."""
    def bad(u):
        best = max(gold[:u + 1])
        at = gold.index(best)
        return gold[u] < best - drop and proxy[u] > proxy[at]
    for t in range(len(gold) - patience + 1):
        if all(bad(u) for u in range(t, t + patience)):
            return t
    return None


def test_onset_worked_examples():
    assert monitors.hacking_onset([0.5, 0.6, 0.45, 0.4, 0.3], [0, 1, 2, 3, 4]) == 2
    assert monitors.hacking_onset([0.5, 0.6, 0.45, 0.4, 0.3], [0, 1, 0.5, 0.5, 0.5]) is None  # the proxy fell too
    assert monitors.hacking_onset([0.5, 0.6, 0.45, 0.6, 0.45], [0, 1, 2, 3, 4]) is None  # one log at a time
    assert monitors.hacking_onset([0.5, 0.6, 0.5, 0.5], [0, 1, 2, 3]) is None  # 0.1 below: not more than 0.1


def test_onset_every_case_of_a_small_space():
    n = 0
    for gold in itertools.product([0.0, 0.05, 0.2, 0.3], repeat=5):
        for proxy in itertools.product([0.0, 1.0], repeat=5):
            assert monitors.hacking_onset(list(gold), list(proxy)) == onset_by_the_words(list(gold), list(proxy)), (gold, proxy)
            n += onset_by_the_words(list(gold), list(proxy)) is not None
    assert n > 1000  # the space holds many onsets, not only their absence


# ----------------------------------------------------------------------------- --stop_on
def test_parse_stop_and_alarm():
    assert monitors.parse_stop("") is None
    assert monitors.parse_stop("audit_gap>0.5") == ("monitor/audit_gap", ">", 0.5)
    assert monitors.parse_stop(" entropy_ratio < 0.5 ") == ("monitor/entropy_ratio", "<", 0.5)
    assert monitors.parse_stop("kl>4") == ("kl", ">", 4.0)
    assert monitors.parse_stop("monitor/ood_frac>1e-1") == ("monitor/ood_frac", ">", 0.1)
    for bad in ("audit_gap", "audit_gap>x", ">3", "kl>=4", "kl>4>5", "kl>-", "kl>1.2.3"):
        with pytest.raises(UserError, match="NAME>THRESHOLD"):
            monitors.parse_stop(bad)
    stop = ("kl", ">", 4.0)
    assert not monitors.alarm(stop, {"kl": 4.0}) and monitors.alarm(stop, {"kl": 4.01})
    assert not monitors.alarm(stop, {"reward": 9.0}) and not monitors.alarm(None, {"kl": 9.0})
    assert monitors.alarm(("monitor/entropy_ratio", "<", 0.5), {"monitor/entropy_ratio": 0.4})
    with pytest.raises(UserError, match="does not log 'monitor/audit_gap'"):
        monitors.check_stop(("monitor/audit_gap", ">", 0.5), None, None, False, ("kl",))  # no reward model
    monitors.check_stop(("monitor/kl_rate", ">", 0.5), None, None, False, ("kl",))  # every run has the trends


# ----------------------------------------------------------------------------- the experiment's offline stop
def test_offline_stop_and_threshold_choice():
    assert moving_average([3, 0, 0, 3]) == [3, 1.5, 1, 1]
    hacked = {"gold_ma": [0.1, 0.5, 0.3, 0.0], "m": [0.0, 0.1, 0.9, 2.0]}
    clean = {"gold_ma": [0.1, 0.3, 0.5, 0.6], "m": [0.0, 0.2, 0.3, 0.4]}
    assert first_alarm(hacked["m"], ">", 0.5) == 2 and first_alarm(clean["m"], ">", 0.5) is None
    assert gold_kept(hacked, 2) == 0.5 and gold_kept(clean, None) == 0.6 and gold_kept(hacked, 0) == 0.1
    # 0.4 stops the hacked run at log 2 (keeps 0.5) and lets the clean one end (0.6): the most gold, and of the
    # thresholds that keep it (0.4 .. 0.9 exclusive of the clean run's values) the one that alarms least
    op, thr = choose([hacked, clean], "m")
    assert op == ">" and first_alarm(hacked["m"], ">", thr) == 2 and first_alarm(clean["m"], ">", thr) is None
    # a monitor that falls when the run hacks: the data choose '<'
    hacked["m"], clean["m"] = [1.0, 0.9, 0.2, 0.1], [1.0, 0.9, 0.8, 0.7]
    op, thr = choose([hacked, clean], "m")
    assert op == "<" and first_alarm(hacked["m"], "<", thr) == 2 and first_alarm(clean["m"], "<", thr) is None


def test_report_counts_each_monitor_over_the_runs_that_logged_it():
    """judge_agree is logged by grpo.py only: its row counts the GRPO runs, not every run as 'never alarmed'."""
    def run(onset, judge):
        r = {k: [None] * 4 for k in SIGNALS}
        r.update(gold_ma=[0.1, 0.5, 0.3, 0.0], onset=onset, cost={}, kl=[0.0, 1.0, 2.0, 3.0])
        r["monitor/judge_agree"] = [0.9, 0.8, 0.2, 0.1] if judge else [None] * 4
        return r
    runs = [run(1, True), run(1, False), run(1, False), run(None, True)]  # 3 hacked (1 judged), 1 clean (judged)
    table = report(runs, {"monitor/judge_agree": ["<", 0.5], "kl": [">", 10.0]})
    judge = next(line for line in table.splitlines() if line.startswith("| judge_agree"))
    kl = next(line for line in table.splitlines() if line.startswith("| kl "))
    # the hacked judged run alarms at log 2, after the onset (1): 0 / 1 warned; the clean one alarms too: 1 / 1
    assert "| 0 / 1 |" in judge and "| 1 / 1 |" in judge, judge
    assert "| 0 / 3 |" in kl and "| 0 / 1 |" in kl, kl


# ----------------------------------------------------------------------------- the stages
PPO = ["--batch_size=8", "--n_minibatches=1", "--ppo_epochs=1", "--eval_repeats=1", "--n_print=0", "--eval_interval=50"]


def test_ppo_stop_keeps_the_policy_before_the_alarm(sft_dir, reward_dir, tmp_path):
    args = [f"--sft_path={sft_dir}", f"--reward_path={reward_dir}", *PPO]
    one = str(tmp_path / "one")
    run("ppo.py", *args, f"--out_dir={one}", "--max_iters=1")  # the policy after one iteration, without monitors
    out = str(tmp_path / "stopped")
    # beta is deterministic while the KL is under 1.6 (update_beta's error clipped at -0.2): x (1 - 0.2 * 8 / 640)
    # a batch, 0.2, 0.1995, 0.19900: the third batch alarms (sampled by the policy of iteration 2), and the policy
    # kept is iteration 1's, whose batch passed
    p = run("ppo.py", *args, f"--out_dir={out}", "--max_iters=6", "--stop_on=beta<0.1992",
            f"--audit_path={reward_dir}")
    ms = read_metrics(out)
    train = [m for m in ms if m.get("split") == "train"]
    assert [m["iter"] for m in train] == [1, 2, 3] and train[-1]["beta"] < 0.1992 < train[-2]["beta"]
    assert ms[-1]["stopped_on"] == "beta < 0.1992" and ms[-1]["kept_iter"] == 1
    assert "policy of iteration 1, whose batch passed" in p.stdout
    # the audit model is loaded aside (monitors.load_aside): the run samples as the one without it did
    a, b = (torch.load(os.path.join(d, "ckpt.pt"), weights_only=True) for d in (one, out))
    assert b["iter_num"] == 1
    for k in ("model", "critic"):
        assert all(torch.equal(a[k][n], b[k][n]) for n in a[k]), k
    # the monitors on every batch: the audit model is the reward model itself here, so the gap is exactly 0;
    # the fixture's reward model knows its range; the trends start at 1 (ratios) and 0 (the KL's slope)
    assert all(m["monitor/audit_gap"] == 0 for m in train)
    assert all(0 <= m["monitor/ood_frac"] <= 1 for m in train)
    assert train[0]["monitor/entropy_ratio"] == 1 and train[0]["monitor/len_ratio"] == 1 and train[0]["monitor/kl_rate"] == 0
    assert all(f"cost/{k}_ms" in train[0] for k in ("audit_gap", "ood_frac", "kl_rate"))
    assert "cost/" not in p.stdout  # (metrics.jsonl only)


def test_grpo_stop_at_the_first_batches_and_refusals(sft_dir, reward_dir, tmp_path):
    out = str(tmp_path / "grpo")
    args = [f"--sft_path={sft_dir}", f"--reward_path={reward_dir}", "--reward_fns=rm", "--prompts_per_batch=4",
            "--group_size=4", "--minibatch_size=16", "--ppo_epochs=1", "--max_new_tokens=24", "--eval_repeats=1",
            "--n_print=0", "--log_interval=1", "--eval_interval=50", "--max_iters=5"]
    # one step a batch from the reference: the first batch's KL is exactly 0, the second's is not
    p = run("grpo.py", *args, f"--out_dir={out}", "--stop_on=kl>0", f"--audit_path={reward_dir}")
    ms = read_metrics(out)
    assert ms[-1]["stopped_on"] == "kl > 0" and ms[-1]["kept_iter"] == 0 and ms[-2]["iter"] == 2
    assert "the SFT model: nothing saved" in p.stdout and not os.path.exists(os.path.join(out, "ckpt.pt"))
    assert ms[-3]["monitor/audit_gap"] == 0 and "monitor/ood_frac" in ms[-3]
    for flags, message in [(["--stop_on=judge_agree<0.5"], "does not log 'monitor/judge_agree'"),
                           (["--stop_on=kl>>1"], "NAME>THRESHOLD"),
                           (["--reward_fns=gold", f"--audit_path={reward_dir}"], "no 'rm'")]:
        p = run("grpo.py", *args, f"--out_dir={tmp_path}/bad", *flags, ok=False)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = run("ppo.py", f"--sft_path={sft_dir}", f"--reward_path={reward_dir}", f"--out_dir={tmp_path}/bad",
            "--stop_on=audit_gap>1", ok=False)
    assert p.returncode == 2 and "does not log 'monitor/audit_gap'" in p.stderr


def test_reward_halves_and_its_range(reward_dir, sft_dir, tmp_path):
    n = sum(1 for _ in open(os.path.join(reward_dir, "feedback", "pairwise_train.jsonl")))
    p = run("reward.py", f"--out_dir={tmp_path}/h2", f"--sft_path={sft_dir}/ckpt.pt", f"--data_path={reward_dir}/feedback",
            "--max_iters=2", "--half=2", "--n_norm=8", "--n_eval=1")
    assert int(p.stdout.split(" train items")[0].split()[-1]) == n // 2  # the second of two equal halves
    ck = torch.load(os.path.join(reward_dir, "ckpt.pt"), weights_only=False)
    q = ck["labelled_scores"]
    assert q["q01"] < q["q50"] < q["q99"]


def test_judge_monitor_end_to_end():
    """A random judge on the full GPT-2 vocabulary: judge_monitor's agreement is the one judge_pairs' log-odds give."""
    torch.manual_seed(0)
    tok = data.Tokenizer(None)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=128, vocab_size=50257)).eval()
    a_id, b_id = labelers.answer_ids(tok, "test")
    judge = (model, tok, a_id, b_id, ["Prefer the better review."])
    prompts = ["Notes on the cafe: tea +. Again: yes."] * 4 + ["Notes on the shop: staff -. Again: no."] * 4
    texts = [f" The tea was {w}. I would go again.{data.EOT_TEXT}" for w in ("good", "great", "bad", "okay")] * 2
    scores = [0.5, 1.0, -1.0, 0.0, 0.3, 0.2, 0.1, 0.0]
    out = monitors.judge_monitor(judge, prompts, texts, scores)
    pairs = monitors.group_pairs(prompts)
    lo = labelers.judge_pairs(model, tok, [("Prefer the better review.", prompts[i], texts[i], texts[j])
                                           for i, j in pairs], a_id, b_id)[0]
    expect = sum((x > 0) == (scores[i] > scores[j]) for x, (i, j) in zip(lo, pairs)) / len(pairs)
    assert len(pairs) == 6 and out["monitor/judge_agree"] == pytest.approx(expect)
