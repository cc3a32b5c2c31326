"""rlaif.py: position-swap averaging on a toy judge with a known bias, the judge's log-odds on padded batches,
the principles file and the judge's vocabulary checked with one-line errors, and (learning) a judge trained
by sft.py on rlaif.py's demonstrations follows the principle it is given on held-out pairs."""
import json
from types import SimpleNamespace

import pytest
import torch

from conftest import read_metrics, run

import data
import labelers
import rewards
import rlaif
import task
from configurator import UserError
from model import GPT, GPTConfig


def test_swap_average_toy_judge():
    # a judge whose log-odds are the true preference s plus a constant pull of 0.5 toward slot A
    s = torch.tensor([1.0, -0.5, 0.2])
    lo_ab, lo_ba = s + 0.5, -s + 0.5  # [1.5, 0.0, 0.7] and [-0.5, 1.0, 0.3]
    avg, shift, same, p_a = labelers.swap_average(lo_ab, lo_ba)
    assert torch.allclose(avg, s) and torch.allclose(shift, torch.full((3,), 0.5))
    # a wins in both orders; b wins in both orders (0.0 is no vote for a); the third: slot A wins both times
    assert same.tolist() == [True, True, False]
    assert ((p_a > 0.5) == (avg > 0)).all()  # the probabilities' mean picks the same winner as the log-odds'


def test_soft_margin_averages_the_orders_probabilities(monkeypatch):
    """Lee et al. 2023 average the two orders' probabilities: the judge's log-odds for slot A are 3 with a
    there and 1 with b there, so P(a) = (sigmoid(3) + sigmoid(-1)) / 2 = (0.95257 + 0.26894) / 2 = 0.61076 and
    the margin |2P - 1| = 0.2215 (the log-odds' mean, 1, would give tanh(1/2) = 0.4621). Through judge_pairs,
    as rlaif.py reads it: the first order's prompt is judge_text(a, b), the second's judge_text(b, a)."""
    avg, shift, same, p_a = labelers.swap_average(torch.tensor([3.0]), torch.tensor([1.0]))
    assert (avg.item(), shift.item(), same.item()) == (1.0, 2.0, False)
    assert p_a.item() == pytest.approx(0.61076, abs=1e-5) and labelers.soft_margin(p_a.item()) == 0.2215
    # b in slot A first: the same pair seen from b, so P(b) = 1 - P(a) and the same margin
    assert labelers.swap_average(torch.tensor([1.0]), torch.tensor([3.0]))[3].item() == pytest.approx(1 - 0.61076, abs=1e-5)
    pr, p, a, b = "Prefer the better review.", "Notes on the cafe: tea --, cake ++. Again: yes.", " The tea was good.<|endoftext|>", " I hated it."
    logodds = {labelers.judge_text(pr, p, a, b): 3.0, labelers.judge_text(pr, p, b, a): 1.0}
    monkeypatch.setattr(labelers, "judge_logodds", lambda m, tok, texts, *_: torch.tensor([logodds[t] for t in texts]))
    tok = data.Tokenizer(data.vocab_of(list(logodds) + [" A", " B"]))
    judge = SimpleNamespace(config=SimpleNamespace(block_size=96))
    lo, shift, same, p_a = labelers.judge_pairs(judge, tok, [(pr, p, a, b)], *labelers.answer_ids(tok, "toy"))
    assert (lo, shift, same) == ([1.0], [2.0], [False]) and labelers.soft_margin(p_a[0]) == 0.2215


def test_judge_text_and_shown():
    t = labelers.judge_text("Prefer the shorter review.", "Notes on the cafe: tea --, cake ++. Again: yes.", " The tea was good.<|endoftext|>",
                         " I liked the cake")
    assert t == ("Prefer the shorter review.\nReview: Notes on the cafe: tea --, cake ++. Again: yes.\nA: The tea was good.\n"
                 "B: I liked the cake ...\nBetter:")


def test_judge_logodds_padded_batch_equals_one_by_one():
    texts = [labelers.judge_text(p, "Notes on the cafe: tea --, cake ++. Again: yes.", a, b) for p, a, b in [
        ("Prefer the better review.", " The tea was good.<|endoftext|>", " I hated the cake.<|endoftext|>"),
        ("Prefer the shorter review.", " The tea was good. The cake was very bad. I would go again.<|endoftext|>",
         " I liked it"),
        ("Prefer the more positive review.", " I would go again.<|endoftext|>", " The music was okay.<|endoftext|>")]]
    vocab = data.vocab_of(texts + [" A", " B"])
    tok = data.Tokenizer(vocab)
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=96, vocab_size=len(vocab))).eval()
    a_id, b_id = labelers.answer_ids(tok, "toy")
    got = labelers.judge_logodds(m, tok, texts, a_id, b_id, batch_size=2)
    for t, g in zip(texts, got):
        logits = m(torch.tensor([tok.encode(t)]))[0, -1]
        assert abs((logits[a_id] - logits[b_id]).item() - g.item()) < 1e-5


def test_answer_ids_need_single_tokens():
    tok = data.Tokenizer(task.vocab())  # the review task's vocabulary has neither " A" nor " B"
    with pytest.raises(UserError, match="cannot write ' A' and ' B'"):
        labelers.answer_ids(tok, "the SFT model")
    a, b = labelers.answer_ids(data.Tokenizer(), "gpt2")
    assert data.Tokenizer().decode([a, b]) == " A B"


def test_read_principles(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# what we want\n\nPrefer the shorter review.\n  Prefer the better review.  \n")
    assert labelers.read_principles(str(f), None, 160, builtin=True) == ["Prefer the shorter review.",
                                                                       "Prefer the better review."]
    assert labelers.read_principles("", None, 160) == labelers.read_principles("", None, 160, builtin=True) == \
        ["Prefer the better review."]  # labelling: one principle unless the file says more


def test_people_follow_the_principle():
    import random
    rng, p = random.Random(0), "Notes on the cafe: tea --, cake ++. Again: yes."
    # gold -0.1 (tea said the wrong way round, cake left out) and 1.0 (complete and faithful)
    short, long = " The tea was great.<|endoftext|>", " The tea was terrible. I loved the cake. I would go again.<|endoftext|>"
    votes = [rlaif.people_vote("Prefer the shorter review.", p, short, long, rng) for _ in range(200)]
    assert sum(votes) > 190  # shorter by 9 words: 0.9 score units, 3.6 temperatures
    votes = [rlaif.people_vote("Prefer the better review.", p, short, long, rng) for _ in range(200)]
    assert sum(votes) < 10


def _one_line_error(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def toy_judge(tmp_path_factory, sft_dir):
    """A judge checkpoint with " A" / " B" that can read every review (the SFT model widened to a few judge
    texts, one step of training): for the errors and the smoke tests."""
    d = tmp_path_factory.mktemp("toyjudge")
    rows = [dict(prompt=labelers.judge_text(p, "Notes on the cafe: tea --, cake ++. Again: yes.", " The tea was good.<|endoftext|>",
                                         " I hated the cake.<|endoftext|>"), completion=ans)
            for p in task.PRINCIPLES for ans in (" A", " B")]
    data.write_jsonl(str(d / "demos.jsonl"), rows)
    run("sft.py", f"--data_path={d}/demos.jsonl", "--compact_vocab=True", f"--init_from={sft_dir}", "--block_size=160",
        f"--out_dir={d}/judge", "--max_iters=1", "--eval_interval=1", "--max_new_tokens=2", "--n_print=0")
    return str(d)


def test_bad_input(tmp_path, sft_dir, toy_judge):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    _one_line_error(run("rlaif.py", f"--judge={toy_judge}/judge", f"--principles={empty}", f"--out_dir={tmp_path}/o",
                        f"--policy_path={sft_dir}", ok=False), "no principle", str(empty))
    long = tmp_path / "long.txt"
    long.write_text("Prefer the better review.\nPrefer the better review" + " the better review" * 30 + ".\n")
    _one_line_error(run("rlaif.py", f"--judge={toy_judge}/judge", f"--principles={long}", f"--out_dir={tmp_path}/o",
                        f"--policy_path={sft_dir}", ok=False), "cannot fit the judge's context", f"{long}:2")
    _one_line_error(run("rlaif.py", f"--judge={sft_dir}", f"--out_dir={tmp_path}/o", f"--policy_path={sft_dir}",
                        ok=False), "cannot write ' A' and ' B'")
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("Prefer the review that rhymes.\n")
    _one_line_error(run("rlaif.py", "--mode=demos", f"--principles={unknown}", f"--out_dir={tmp_path}/o",
                        f"--policy_path={sft_dir}", ok=False), "cannot follow", f"{unknown}:1")
    _one_line_error(run("rlaif.py", f"--judge={tmp_path}/nothing", f"--out_dir={tmp_path}/o", ok=False), "no checkpoint")
    _one_line_error(run("rlaif.py", "--n_pairs=0", f"--out_dir={tmp_path}/o", ok=False), "--n_pairs=0")
    _one_line_error(run("sft.py", "--compact_vocab=True", f"--out_dir={tmp_path}/o", ok=False), "--compact_vocab")


def test_judge_learns_the_principles(tmp_path, sft_dir):
    """Learning: people judge 600 pairs of the SFT model's samples under two principles (and rate both
    responses); a judge fine-tuned from the SFT model on those judgements (1,500 steps; on task v2 "more
    positive" reached 0.56 at 1,000, 0.69 at 1,500) then labels 200 fresh pairs. Under "more positive" its
    labels agree with the praise, under "shorter" with the length; and changing the principle in the file
    changes its labels of the same pairs. (Under "better" the tiny
    judge has to look each sentence up in the notes, which it does not learn in CI's budget: RESULTS.md.)"""
    two = tmp_path / "two.txt"
    two.write_text("Prefer the more positive review.\nPrefer the shorter review.\n")
    run("rlaif.py", "--mode=demos", f"--principles={two}", f"--policy_path={sft_dir}", "--n_pairs=600",
        f"--out_dir={tmp_path}/demos")
    rows = [json.loads(line) for line in open(tmp_path / "demos" / "judge_demos.jsonl")]
    assert len(rows) == 600 * 2 * 2 + 1200 * 2  # choices in both orders, and both responses rated, per principle
    run("sft.py", f"--data_path={tmp_path}/demos/judge_demos.jsonl", f"--init_from={sft_dir}", "--compact_vocab=True",
        "--block_size=160", "--max_iters=1500", "--lr=1e-3", "--eval_interval=1500", "--log_interval=100", "--n_print=0",
        "--max_new_tokens=2", f"--out_dir={tmp_path}/judge")
    got, chosen = {}, {}
    for name, principle in (("positive", "the more positive"), ("shorter", "the shorter")):
        f = tmp_path / f"{name}.txt"
        f.write_text(f"Prefer {principle} review.\n")
        run("rlaif.py", f"--judge={tmp_path}/judge", f"--principles={f}", f"--policy_path={sft_dir}", "--n_pairs=200",
            f"--out_dir={tmp_path}/{name}")
        got[name] = read_metrics(f"{tmp_path}/{name}")[0]
        chosen[name] = [json.loads(line)["chosen"] for line in open(tmp_path / name / "pairwise_train.jsonl")]
        print(name, {k: round(v, 3) for k, v in got[name].items() if k.startswith("train/")})
    assert got["positive"]["train/labels_acc_principle"] > 0.6
    assert got["positive"]["train/agreement/humans"] > 0.6
    assert got["shorter"]["train/labels_acc_principle"] > 0.6
    assert len(chosen["positive"]) == len(chosen["shorter"]) > 150  # the same pairs, labelled under each principle
    assert sum(a != b for a, b in zip(chosen["positive"], chosen["shorter"])) > 0.2 * len(chosen["positive"])


def test_judge_reward_round_robin(monkeypatch):
    """Direct RLAIF's reward on a toy judge of known log-odds: score(slot A) - score(slot B) + 0.75, a pull
    toward slot A. Both orders cancel the pull, so a response's reward is its mean score difference to the
    others of its group: scores 1, -0.5, 0.5 -> (1.5 + 0.5) / 2 = 1, (-1.5 - 1) / 2 = -1.25, (-0.5 + 1) / 2
    = 0.25; 2, 0 -> 2, -2; a group of one scores 0. (One order alone would add 0.75 to the first-shown.)"""
    prompts = ["Notes on the cafe: tea --, cake ++. Again: yes."] * 3 + ["Notes on the hotel: bed ++, view -. Again: no."] * 2 + ["Notes on the museum: guide +, shop 0. Again: yes."]
    responses = [" The tea was good.<|endoftext|>", " I hated the cake.<|endoftext|>", " The music was okay",
                 " The room was great.<|endoftext|>", " I would not go again.<|endoftext|>", " I liked the shop."]
    score = dict(zip(map(labelers.shown, responses), [1.0, -0.5, 0.5, 2.0, 0.0, 3.0]))
    pr = "Prefer the better review."

    def judge_logodds(model, tok, texts, a_id, b_id, batch_size=64):
        slot = lambda t, s: next(x for x in t.split("\n") if x.startswith(s))[len(s):]
        return torch.tensor([score[slot(t, "A:")] - score[slot(t, "B:")] + 0.75 for t in texts])
    monkeypatch.setattr(labelers, "judge_logodds", judge_logodds)
    vocab = data.vocab_of([labelers.judge_text(pr, p, r, r) for p, r in zip(prompts, responses)] + [" A", " B"])
    judge = SimpleNamespace(config=SimpleNamespace(block_size=96))
    r = rewards.judge_reward(judge, data.Tokenizer(vocab), [pr])(prompts, responses)
    assert r == [1.0, -1.25, 0.25, 2.0, -2.0, 0.0], r


def test_full_vocabulary_judge_relabels_a_file(tmp_path):
    """The GPT-2 path (a zero-shot judge on your pairs), with a tiny random full-vocabulary model standing in
    for GPT-2 (no download in CI): every pair of the file is labelled as the judge, read here in-process,
    says (winner: the sign of the log-odds' mean; margin: from the orders' mean probability), and the
    agreement reported is the share of rows it kept as the file had them (5 rows: never 1 - itself)."""
    import common
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=128, vocab_size=50257))
    with torch.no_grad():  # a random init's log-odds barely depend on the pair: sharper attention, and " A" and
        m.transformer.h[0].attn.c_attn.weight *= 20  # " B" (tied rows the prompts never use) 50x, give margins to 0.14
        m.lm_head.weight[list(labelers.answer_ids(data.Tokenizer(), "gpt2"))] *= 50
    common.save_checkpoint(str(tmp_path / "judge" / "ckpt.pt"), dict(model=m.state_dict(), vocab=None,
                                                                      model_args=common.model_args_of(m), config={}))
    rows = [dict(prompt="Human: Say something kind.\n\nAssistant:", chosen=" You are wonderful.", rejected=" Go away."),
            dict(prompt="Human: What is 2 + 2?\n\nAssistant:", chosen=" 4.", rejected=" 5."),
            dict(prompt="Human: Name a colour.\n\nAssistant:", chosen=" Blue.", rejected=" A chair."),
            dict(prompt="Human: Is the sun hot?\n\nAssistant:", chosen=" Yes, very.", rejected=" No, it is cold."),
            dict(prompt="Human: Say hello.\n\nAssistant:", chosen=" Hello!", rejected=" Goodbye forever.")]
    data.write_jsonl(str(tmp_path / "prefs.jsonl"), rows)
    p = tmp_path / "p.txt"
    p.write_text("Prefer the more helpful and kind answer.\n")
    run("rlaif.py", f"--judge={tmp_path}/judge", f"--pairs_path={tmp_path}/prefs.jsonl", f"--principles={p}",
        f"--out_dir={tmp_path}/out")
    got = read_metrics(f"{tmp_path}/out")[0]
    labelled = [json.loads(line) for line in open(tmp_path / "out" / "pairwise_train.jsonl")]
    assert got["train/n_labels"] == len(labelled) == 5 and got["train/n_unreadable"] == 0
    kept = [(r["chosen"], r["rejected"]) == (a["chosen"], a["rejected"]) for r, a in zip(labelled, rows)]
    assert got["train/agreement/labels"] == pytest.approx(sum(kept) / 5)
    judge, tok, a_id, b_id, plist = labelers.load_judge(f"{tmp_path}/judge", str(p), "cpu")
    lo, _, _, p_a = labelers.judge_pairs(judge, tok, [(plist[0], a["prompt"], a["chosen"], a["rejected"]) for a in rows],
                                         a_id, b_id)
    assert kept == [x > 0 for x in lo] and all(x != 0 for x in lo)
    assert [r["margin"] for r in labelled] == pytest.approx([labelers.soft_margin(x) for x in p_a], abs=2e-4)
    assert all(r["principle"] == plist[0] and r["prompt"] == a["prompt"] for r, a in zip(labelled, rows))


def test_online_dpo_and_grpo_with_the_judge(tmp_path, sft_dir, toy_judge):
    """Smoke: dpo.py --online --labeler=ai and grpo.py --reward_fns=judge run with a judge checkpoint, and
    log what they should (labels; the judge's reward)."""
    run("dpo.py", "--online=True", "--labeler=ai", f"--judge_path={toy_judge}/judge", f"--sft_path={sft_dir}",
        f"--out_dir={tmp_path}/dpo", f"--data_path={tmp_path}/none_train.jsonl", "--max_iters=2", "--eval_interval=2",
        "--log_interval=1", "--batch_size=4", "--eval_repeats=1", "--n_print=0")
    assert read_metrics(f"{tmp_path}/dpo")[-1]["labels"] > 0
    run("grpo.py", "--reward_fns=judge", f"--judge_path={toy_judge}/judge", f"--sft_path={sft_dir}",
        f"--out_dir={tmp_path}/grpo", "--max_iters=1", "--eval_interval=1", "--log_interval=1", "--group_size=4",
        "--prompts_per_batch=4", "--minibatch_size=16", "--eval_repeats=1", "--n_print=0")
    train = [r for r in read_metrics(f"{tmp_path}/grpo") if "reward/judge" in r]
    assert train and abs(train[-1]["reward/judge"]) < 1e-5  # a round robin's rewards sum to 0 in every group


def test_widen_keeps_what_the_model_knew():
    """common.widen (sft.py --compact_vocab from a checkpoint): on text of its own tokens, the widened model's
    logits of the old tokens are the old model's, at every position of the old context; the new rows and
    positions exist."""
    import common
    vocab = task.vocab()
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=len(vocab))).eval()
    new_vocab = sorted(set(vocab) | set(data.vocab_of(["\nBetter: A B"])))
    w = common.widen(m, vocab, new_vocab, 160).eval()
    assert w.config.block_size == 160 and w.config.vocab_size == len(new_vocab) > len(vocab)
    tok = data.Tokenizer(vocab)
    x = torch.tensor([tok.encode("Notes on the cafe: tea --, cake ++. Again: yes. The tea was good. I would go again.")])
    at = torch.tensor([new_vocab.index(g) for g in vocab])
    wx = torch.tensor([[new_vocab.index(vocab[i]) for i in x[0].tolist()]])
    assert torch.allclose(m(x), w(wx)[..., at], atol=1e-5)


def test_ties_are_judged_but_left_out_of_the_agreement(tmp_path, toy_judge):
    """--pairs_path: a tie names no winner, so the agreement with the file's labels skips it (and says how
    many). Each tie here is a non-tie row with its responses swapped: the judge (both orders averaged) prefers
    the same response in both, so counted as preferences the twins would agree exactly half the time."""
    good, bad = " The tea was good.<|endoftext|>", " I hated the cake.<|endoftext|>"
    pairs = [dict(prompt=p, chosen=c, rejected=r) for p, (c, r) in zip(
        ["Notes on the cafe: tea +. Again: yes.", "Notes on the hotel: bed -. Again: no.",
         "Notes on the restaurant: soup 0. Again: yes."], [(good, bad), (bad, good), (good, bad)])]
    data.write_jsonl(str(tmp_path / "p.jsonl"), pairs + [dict(r, chosen=r["rejected"], rejected=r["chosen"], tie=True)
                                                         for r in pairs])
    p = run("rlaif.py", "--mode=label", f"--judge={toy_judge}/judge", f"--pairs_path={tmp_path}/p.jsonl",
            f"--out_dir={tmp_path}/o")
    assert "3 of 6 rows are ties" in p.stdout and "(3 ties skipped)" in p.stdout, p.stdout
    out = [json.loads(line) for line in open(tmp_path / "o" / "pairwise_train.jsonl")]
    rep = read_metrics(str(tmp_path / "o"))[0]
    assert len(out) == 6 and rep["train/n_unreadable"] == 0 and rep["train/n_ties"] == 3  # ties labelled too
    assert [o["chosen"] for o in out[:3]] == [o["chosen"] for o in out[3:]]  # each twin: the same winner
    agree = sum(o["chosen"] == r["chosen"] for o, r in zip(out, pairs)) / 3
    assert rep["train/agreement/labels"] == pytest.approx(agree, abs=1e-4) and agree != 0.5
