"""Dataset formats (README: Dataset formats): each detected from its fields, normalised to the rows the
stages read; a file mixing formats, or an empty text, is an error naming the line. Every reader of a file the
user names (JSONL, prompts, principles, reward functions, checkpoints, metrics) turns a missing path, a
directory, a non-UTF-8, empty or malformed file into one line naming the path (and line)."""
import json
import re

import pytest

import common
import data
import feedback_data
import labelers
import rewards
from configurator import MissingFile, UserError


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
    ({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],  # TRL's
      "completion": [{"role": "assistant", "content": "Hi!"}]}, "instruction",  # conversational (no template)
     "System: Be brief.\n\nUser: Say hi.\n\nAssistant:", " Hi!<|endoftext|>"),
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
    ({"prompt": "Q?", "prompt_id": "0", "score_chosen": 8.0, "score_rejected": 2.0,  # UltraFeedback-binarized
      "chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}],
      "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "no"}]},
     ("User: Q?\n\nAssistant:", " yes<|endoftext|>", " no<|endoftext|>")),
])
def test_preference_formats(tmp_path, row, expected):
    (r,) = feedback_data.load_preferences(write(tmp_path, [row]))
    assert (r["prompt"], r["chosen"], r["rejected"]) == expected and r["where"].endswith("d.jsonl:1")


def test_ultrafeedback_renders_as_sft_messages_do(tmp_path):
    """An SFT model trained on `messages` rows sees the same text at preference time."""
    turns = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Name a cat."}]
    chosen, rejected = turns + [{"role": "assistant", "content": "Whiskers."}], turns + [{"role": "assistant", "content": "No."}]
    (r,) = feedback_data.load_preferences(write(tmp_path, [{"prompt": "Name a cat.", "chosen": chosen, "rejected": rejected}]))
    (sft,) = data.load_sft_jsonl(write(tmp_path, [{"messages": chosen}], "sft.jsonl"))
    assert (r["prompt"], r["chosen"]) == sft[:2] == ("System: Be kind.\n\nUser: Name a cat.\n\nAssistant:", " Whiskers.<|endoftext|>")
    assert r["rejected"] == " No.<|endoftext|>"


def test_conversational_unpaired_thumbs_as_0_1_and_prompts(tmp_path):
    q, a = [{"role": "user", "content": "Q?"}], [{"role": "assistant", "content": "yes"}]
    u, v, w = feedback_data.load_unpaired(write(tmp_path, [{"prompt": q, "completion": a, "label": 1},
                                                  {"prompt": q, "completion": a, "label": 0},
                                                  {"prompt": q, "completion": a, "label": False}]))
    assert (u["prompt"], u["completion"], u["label"], v["label"], w["label"]) == \
        ("User: Q?\n\nAssistant:", " yes<|endoftext|>", True, False, False)
    assert all(type(x["label"]) is bool for x in (u, v, w))  # 1 / 0 become true / false
    assert data.load_prompts(write(tmp_path, [{"prompt": q}, {"prompt": q + a + q}])) == \
        ["User: Q?\n\nAssistant:", "User: Q?\n\nAssistant: yes\n\nUser: Q?\n\nAssistant:"]
    assert data.load_prompts(write(tmp_path, [{"prompt": "Say hi."}]), "instruction") == \
        ["### Instruction:\nSay hi.\n\n### Response:\n"]


def test_rankings_and_unpaired_formats(tmp_path):
    (a,) = feedback_data.load_rankings(write(tmp_path, [{"prompt": "p", "ranking": ["x", "y", "z"]}]))
    (b,) = feedback_data.load_rankings(write(tmp_path, [{"prompt": "p", "responses": ["x", "y", "z"], "ranking": [2, 0, 1]}]))
    assert a["ranking"] == ["x", "y", "z"] and b["ranking"] == ["z", "x", "y"]
    (u, v) = feedback_data.load_unpaired(write(tmp_path, [{"prompt": "p", "completion": "x", "label": True},
                                                 {"prompt": "p", "completion": "y", "label": False}]))
    assert (u["label"], v["label"], v["completion"]) == (True, False, "y")


@pytest.mark.parametrize("loader, rows, message", [
    (data.load_sft_jsonl, [{"prompt": "a", "completion": "b"}, {"text": "c"}], r"'text' format but line 1 is 'prompt_completion'.*d.jsonl:2"),
    (data.load_sft_jsonl, [{"prompt": "a", "completion": ""}], r"`completion` must be a non-empty string.*d.jsonl:1"),
    (data.load_sft_jsonl, [{"instruction": "a", "input": 3, "output": "b"}], r"`input` must be a string.*d.jsonl:1"),
    (feedback_data.load_preferences, [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"chosen": "p a", "rejected": "p b"}],
     r"'implicit' format but line 1 is 'explicit'.*d.jsonl:2"),
    (feedback_data.load_preferences, [{"prompt": "p", "chosen": "", "rejected": "b"}], r"`chosen` must be a non-empty.*d.jsonl:1"),
    (feedback_data.load_preferences, [{"chosen": "abc", "rejected": "xyz"}], r"share no prompt.*d.jsonl:1.*add a `prompt` field"),
    (feedback_data.load_preferences, [{"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                              "rejected": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "b"}]}],
     r"share every turn but the last.*d.jsonl:1"),
    (feedback_data.load_preferences, [{"prompt": "p", "chosen": "a"}], r"missing field.*d.jsonl:1"),
    (feedback_data.load_rankings, [{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 2]}], r"distinct indices.*d.jsonl:1"),
    (feedback_data.load_rankings, [{"prompt": "p", "ranking": ["a"]}], r"at least 2.*d.jsonl:1"),
    (feedback_data.load_unpaired, [{"prompt": "p", "completion": "a", "label": "yes"}], r"label must be true / false or 1 / 0, got 'yes'.*d.jsonl:1"),
    (feedback_data.load_unpaired, [{"prompt": "p", "completion": "a", "label": 1}, {"prompt": "p", "completion": "b", "label": 2}],
     r"label must be true / false or 1 / 0, got 2 \(.*d.jsonl:2\)"),
    (feedback_data.load_unpaired, [{"prompt": "p", "completion": "a", "label": 1.0}], r"or 1 / 0, got 1.0 \(.*d.jsonl:1\)"),
    (feedback_data.load_unpaired, [{"prompt": [{"role": "user", "content": "p"}], "completion": "a", "label": 1}],
     r"each completion a list of one assistant turn \(.*d.jsonl:1\)"),
    (data.load_sft_jsonl, [{"prompt": [{"role": "user", "content": "p"}], "completion": [
        {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}], r"list of one assistant turn \(.*d.jsonl:1\)"),
    (data.load_sft_jsonl, [{"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "user", "content": "b"}]}],
     r"ending with an assistant turn \(.*d.jsonl:1\)"),
    (feedback_data.load_preferences, [{"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}],
                              "rejected": "b"}], r"list of one assistant turn \(.*d.jsonl:1\)"),
    (feedback_data.load_preferences, [{"prompt": "p", "chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "a"}],
                              "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}],
     r"share every turn but the last \(.*d.jsonl:1\)"),
    (data.load_prompts, [{"prompt": "p"}, {"prompt": 5}], r"`prompt` must be a non-empty string, got 5 \(.*d.jsonl:2\)"),
    (data.load_prompts, [{"prompt": [{"role": "user"}]}], r"each message needs a role .*\(.*d.jsonl:1\)"),
])
def test_bad_rows_name_the_line(tmp_path, loader, rows, message):
    with pytest.raises(UserError, match=message):
        loader(write(tmp_path, rows))


# ----------------------------------------------------------------------------- readers: a bad file is one line
NOT_UTF8 = b"ok\n\xff\xfe\x00bad\n"  # line 2 is not UTF-8
JSONL_BAD = b"\n{oops\n"  # line 2 is not JSON
TEXT_READERS = {  # name: (reads a path, file suffix, what an empty file says, a malformed file, what it says)
    **{f.__name__: (f, ".jsonl", r"empty dataset", JSONL_BAD, r"malformed JSON .* \(.*:2\)") for f in (
        data.read_jsonl, data.load_sft_jsonl, feedback_data.load_preferences, feedback_data.load_rankings, feedback_data.load_unpaired,
        data.load_prompts)},
    "read_principles": (lambda p: labelers.read_principles(p, None, 10 ** 6, builtin=True), ".txt",
                        r"has no principle", b"# a comment\nBe rude.\n", r"cannot follow 'Be rude\.' \(.*:2\)"),
    "load_rewards": (lambda p: rewards.load_rewards(f"{p}:fn"), ".py", r"has no function 'fn'",
                     b"def fn(prompts, responses):\n    return [\n", r"does not parse \('\[' was never closed\) \(.*:2\)"),
}


@pytest.mark.parametrize("case", ["missing", "directory", "not_utf8", "empty", "malformed"])
@pytest.mark.parametrize("reader", TEXT_READERS)
def test_a_bad_file_is_one_line_naming_it(tmp_path, reader, case):
    read, suffix, empty, malformed, says = TEXT_READERS[reader]
    path = tmp_path / f"in{suffix}"
    if case == "directory":
        path.mkdir()
    elif case != "missing":
        path.write_bytes(dict(not_utf8=NOT_UTF8, empty=b"", malformed=malformed)[case])
    where = re.escape(str(path))
    expected = dict(missing=rf"^no such .*\({where}\)", directory=rf"is a directory \({where}\)",
                    not_utf8=rf"is not UTF-8 text \(byte 0xff\) \({where}:2\)\. save it as UTF-8$",
                    empty=rf"(?=.*{where}).*{empty}", malformed=rf"{says}".replace(".*:2", f"{where}:2"))[case]
    with pytest.raises(MissingFile if case == "missing" else UserError, match=expected) as e:
        read(str(path))
    assert "\n" not in str(e.value)


def test_a_utf8_byte_order_mark_is_dropped(tmp_path):
    f = tmp_path / "bom.jsonl"  # what Windows editors write
    f.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "a"}\n')
    assert data.load_prompts(str(f)) == ["a"]


@pytest.mark.parametrize("case, expected", [
    ("missing", r"in: no checkpoint here"),
    ("directory", r"in/ckpt\.pt: no checkpoint here"),  # neither ckpt.pt nor a Hugging Face model.safetensors / .bin
    ("not_utf8", r"in: not a readable checkpoint \(UnpicklingError\)\. give the ckpt\.pt"),
    ("empty", r"in: not a readable checkpoint \(EOFError\)"),
    ("malformed", r"in: not a readable checkpoint \(no model / model_args in it\)\. Hugging Face"),  # a torch file
])
def test_a_bad_checkpoint_is_one_line_naming_it(tmp_path, case, expected):
    import torch
    path = tmp_path / "in"
    if case == "directory":
        path.mkdir()
        (path / "notes.txt").write_text("no weights here")
    elif case == "malformed":
        torch.save({"weights": torch.zeros(2)}, path)
    elif case != "missing":
        path.write_bytes(dict(not_utf8=NOT_UTF8, empty=b"")[case])
    with pytest.raises(MissingFile if case in ("missing", "directory") else UserError, match=expected) as e:
        common.load_model(str(path))
    assert "\n" not in str(e.value)


def test_bad_hugging_face_weights_are_one_line(tmp_path):
    from model import GPT, GPTConfig, to_hf
    to_hf(GPT(GPTConfig(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=4)), str(tmp_path))
    (tmp_path / "config.json").write_bytes(NOT_UTF8)
    with pytest.raises(UserError, match=r"config\.json: not a GPT-2 config\.json with n_head \(UnicodeDecodeError\)"):
        common.load_model(str(tmp_path))
    (tmp_path / "pytorch_model.bin").write_bytes(NOT_UTF8)
    with pytest.raises(UserError, match=r"pytorch_model\.bin: not readable GPT-2 weights \(UnpicklingError\)"):
        common.load_model(str(tmp_path))


def test_plot_names_a_non_utf8_line(tmp_path, capsys):
    import plot
    f = tmp_path / "metrics.jsonl"
    f.write_bytes(b'{"iter": 0}\n\xff\n')
    with pytest.raises(SystemExit) as e:
        plot.read_metrics(str(f))
    assert e.value.code == 2 and re.search(r"metrics\.jsonl line 2: not UTF-8 text", capsys.readouterr().err)


def tiny_checkpoint(folder):
    """A 1-layer model of the built-in task's vocabulary, saved as a stage would: enough to load."""
    import torch
    import task
    from model import GPT, GPTConfig
    folder.mkdir()
    m = GPT(GPTConfig(block_size=256, vocab_size=len(task.vocab()), n_layer=1, n_head=1, n_embd=8))
    torch.save(dict(model=m.state_dict(), model_args=common.model_args_of(m), vocab=task.vocab()), folder / "ckpt.pt")
    return folder


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
    ("feedback.py", ["--n_annotators=6"], r"^error: --n_annotators=6: must be > 0, <= n_labelers \(= 5\)$"),
    # one per reader family: JSONL, prompt file, checkpoint, principles, reward function file, metrics
    ("sft.py", ["--data_path={nonutf8}"], r"^error: the file is not UTF-8 text \(byte 0xff\) \(.*nonutf8\.jsonl:2\)\. save it as UTF-8$"),
    ("sample.py", ["--init_from={tiny}", "--prompt_file={tmp}"], r"^error: the prompt file is a directory \(.*\)$"),
    # the prompt file is read before any model (here none is there to load)
    ("sample.py", ["--init_from={tmp}/none", "--prompt_file={nonutf8}"], r"^error: the prompt file is not UTF-8 text .*:2\)"),
    ("sample.py", ["--init_from={tmp}/none", "--prompt_file={tmp}/none.txt"], r"^error: no such prompt file \(.*none\.txt\)$"),
    ("sample.py", ["--init_from={tmp}/none", "--prompt_file={blank}"], r"^error: .*blank\.txt: no prompts in it"),
    ("sample.py", ["--init_from={nonutf8}"], r"^error: .*nonutf8\.jsonl: not a readable checkpoint \(UnpicklingError\)"),
    ("rlaif.py", ["--mode=demos", "--principles={nonutf8}", "--out_dir={tmp}/o"],
     r"^error: the principles file is not UTF-8 text .*nonutf8\.jsonl:2\)"),
    ("grpo.py", ["--sft_path={tiny}", "--reward_fns={tmp}/syntax.py:fn", "--out_dir={tmp}/o"],
     r"^error: the reward function file does not parse \('\(' was never closed\) \(.*syntax\.py:1\)$"),
    ("plot.py", ["{nonutf8}"], r"^error: .*nonutf8\.jsonl line 2: not UTF-8 text"),
])
def test_user_errors_are_one_line_with_exit_status_2(tmp_path, script, args, expected):
    from conftest import run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": oops}\n')
    (tmp_path / "nonutf8.jsonl").write_bytes(b'{"prompt": "a", "completion": "b"}\n\xff\xfe\x00bad\n')
    (tmp_path / "syntax.py").write_text("def fn(prompts, responses:\n    return [1.0] * len(responses)\n")
    (tmp_path / "blank.txt").write_text("\n  \n")
    tiny = tiny_checkpoint(tmp_path / "tiny") if any("{tiny}" in a for a in args) else None
    if not any(a.startswith("--out_dir=") for a in args):  # (not the default, out/...: a developer's own runs)
        args = args + ["--out_dir={tmp}/o"]
    p = run(script, *[a.format(bad=bad, tmp=tmp_path, nonutf8=tmp_path / "nonutf8.jsonl", tiny=tiny, blank=tmp_path / "blank.txt")
                      for a in args],
            ok=False, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(expected, lines[0]), lines
