"""Dataset formats (README: Dataset formats): each detected from its fields, normalised to the rows the
stages read; a file mixing formats, or an empty text, is an error naming the line."""
import json

import pytest

import data
from configurator import UserError


def write(tmp_path, rows, name="d.jsonl"):
    f = tmp_path / name
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(f)


# ----------------------------------------------------------------------------- SFT
@pytest.mark.parametrize("row, template, prompt, completion", [
    ({"text": "Once upon a time."}, "plain", "<|endoftext|>", "Once upon a time."),
    ({"prompt": "Say hi.", "completion": " Hi!"}, "plain", "Say hi.", " Hi!"),
    ({"prompt": "Say hi.", "completion": "Hi!"}, "instruction", "### Instruction:\nSay hi.\n\n### Response:\n", "Hi!"),
    ({"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}, "plain",
     "User: Say hi.\n\nAssistant:", " Hi!<|endoftext|>"),
    ({"instruction": "Add.", "input": "2 + 2", "output": "4"}, "plain", "Add.\n\n2 + 2\n", "4"),  # Alpaca
    ({"instruction": "Add.", "input": "", "output": "4"}, "instruction", "### Instruction:\nAdd.\n\n### Response:\n", "4"),
    ({"instruction": "Add 2 and 2.", "response": "4"}, "plain", "Add 2 and 2.\n", "4"),
])
def test_sft_formats(tmp_path, row, template, prompt, completion):
    (p, c, where), = data.load_sft_jsonl(write(tmp_path, [row]), template)
    assert (p, c) == (prompt, completion) and where.endswith("d.jsonl:1")


# ----------------------------------------------------------------------------- preferences
HH_C = "\n\nHuman: What is a good name for a cat?\n\nAssistant: Whiskers is a classic."
HH_R = "\n\nHuman: What is a good name for a cat?\n\nAssistant: Why would I care."


@pytest.mark.parametrize("row, expected", [
    ({"prompt": "Q?", "chosen": " yes", "rejected": " no"}, ("Q?", " yes", " no")),
    ({"chosen": HH_C, "rejected": HH_R},  # implicit prompt, cut after the last "Assistant:" (not at "W")
     ("\n\nHuman: What is a good name for a cat?\n\nAssistant:", " Whiskers is a classic.", " Why would I care.")),
    ({"chosen": "The food was great.", "rejected": "The food was awful."},  # no turn marker: at a space
     ("The food was", " great.", " awful.")),
    ({"prompt": [{"role": "user", "content": "Q?"}],  # conversational, explicit prompt
      "chosen": [{"role": "assistant", "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]},
     ("User: Q?\n\nAssistant:", " yes<|endoftext|>", " no<|endoftext|>")),
    ({"chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}],  # implicit
      "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "no"}]},
     ("User: Q?\n\nAssistant:", " yes<|endoftext|>", " no<|endoftext|>")),
])
def test_preference_formats(tmp_path, row, expected):
    (r,) = data.load_preferences(write(tmp_path, [row]))
    assert (r["prompt"], r["chosen"], r["rejected"]) == expected and r["where"].endswith("d.jsonl:1")


def test_rankings_and_unpaired_formats(tmp_path):
    (a,) = data.load_rankings(write(tmp_path, [{"prompt": "p", "ranking": ["x", "y", "z"]}]))
    (b,) = data.load_rankings(write(tmp_path, [{"prompt": "p", "responses": ["x", "y", "z"], "ranking": [2, 0, 1]}]))
    assert a["ranking"] == ["x", "y", "z"] and b["ranking"] == ["z", "x", "y"]
    (u, v) = data.load_unpaired(write(tmp_path, [{"prompt": "p", "completion": "x", "label": True},
                                                 {"prompt": "p", "completion": "y", "label": False}]))
    assert (u["label"], v["label"], v["completion"]) == (True, False, "y")


@pytest.mark.parametrize("loader, rows, message", [
    (data.load_sft_jsonl, [{"prompt": "a", "completion": "b"}, {"text": "c"}], r"'text' format but line 1 is 'prompt_completion'.*d.jsonl:2"),
    (data.load_sft_jsonl, [{"prompt": "a", "completion": ""}], r"`completion` must be a non-empty string.*d.jsonl:1"),
    (data.load_sft_jsonl, [{"instruction": "a", "input": 3, "output": "b"}], r"`input` must be a string.*d.jsonl:1"),
    (data.load_preferences, [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"chosen": "p a", "rejected": "p b"}],
     r"'implicit' format but line 1 is 'explicit'.*d.jsonl:2"),
    (data.load_preferences, [{"prompt": "p", "chosen": "", "rejected": "b"}], r"`chosen` must be a non-empty.*d.jsonl:1"),
    (data.load_preferences, [{"chosen": "abc", "rejected": "xyz"}], r"share no prompt.*d.jsonl:1.*add a `prompt` field"),
    (data.load_preferences, [{"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                              "rejected": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "b"}]}],
     r"share every turn but the last.*d.jsonl:1"),
    (data.load_preferences, [{"prompt": "p", "chosen": "a"}], r"missing field.*d.jsonl:1"),
    (data.load_rankings, [{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 2]}], r"distinct indices.*d.jsonl:1"),
    (data.load_rankings, [{"prompt": "p", "ranking": ["a"]}], r"at least 2.*d.jsonl:1"),
    (data.load_unpaired, [{"prompt": "p", "completion": "a", "label": "yes"}], r"label must be true or false.*d.jsonl:1"),
])
def test_bad_rows_name_the_line(tmp_path, loader, rows, message):
    with pytest.raises(UserError, match=message):
        loader(write(tmp_path, rows))


@pytest.mark.parametrize("script, args, expected", [
    ("sft.py", ["--data_path={bad}"], r"^error: malformed JSON .*\(.*bad\.jsonl:2\)\. each line must be one JSON object$"),
    ("sft.py", ["--data_path={tmp}/none.jsonl"], r"^error: no such file \(.*none\.jsonl\)\. check the path"),
    ("dpo.py", ["--sft_path={tmp}/nowhere"], r"^error: .*nowhere.*no checkpoint here"),
    ("ppo.py", ["--batch_size=many"], r"^error: bad value: --batch_size: expected int, got 'many'"),
    ("sample.py", ["--init_from={tmp}/nothing"], r"^error: .*nothing"),
    ("grpo.py", ["--kl_estimator=k9", "--sft_path={tmp}/x"], r"^error: "),
    ("reward.py", ["--data_path={tmp}/fb"], r"^error: .*fb/pairwise_train\.jsonl: no pairwise feedback here.* run `python feedback\.py` first"),
    ("feedback.py", ["--policy_path={tmp}/nowhere"], r"^error: .*nowhere.*no checkpoint here"),
    ("feedback.py", ["--labelers=careful:0.5,noisy:0.2"], r"^error: --labelers=.*must be >= 0 and sum to 1 \(they sum to 0\.7\)"),
    ("feedback.py", ["--n_annotators=5"], r"^error: --n_annotators=5: must be > 0, <= n_labelers \(= 3\)$"),
])
def test_user_errors_are_one_line_with_exit_status_2(tmp_path, script, args, expected):
    import re
    from conftest import run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": oops}\n')
    p = run(script, *[a.format(bad=bad, tmp=tmp_path) for a in args], ok=False, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(expected, lines[0]), lines
