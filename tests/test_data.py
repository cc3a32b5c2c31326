"""data.py: JSONL readers and their errors, prompt formatting, the compact vocabulary (the task: test_task.py)."""
import json
import random

import pytest

import data
import labelers
import task

P = "Notes on the cafe: coffee ++, cake -, staff 0. Again: yes."


def test_encode_prompts_rejects_too_long(tmp_path):
    tok = data.Tokenizer(task.vocab())
    (tmp_path / "p.jsonl").write_text('{"prompt": "I loved the cake."}\n\n{"prompt": "%s"}\n' % P)
    prompts, where = data.load_prompts(str(tmp_path / "p.jsonl"), lines=True)  # each prompt's file:line
    assert prompts == ["I loved the cake.", P] and where == [f"{tmp_path}/p.jsonl:1", f"{tmp_path}/p.jsonl:3"]
    assert len(data.encode_prompts(tok, [P], 20)[0]) == 18  # Notes on the cafe : coffee ++ , cake - , staff 0 . Again : yes .
    with pytest.raises(ValueError, match=r"^the prompt has 18 tokens; the context leaves it 1\.\.5 .*\(prompt 0\)"):
        data.encode_prompts(tok, [P], 5)
    with pytest.raises(ValueError, match=r"has 18 tokens.* \(p\.jsonl:3\)\. shorten it, or lower --max_new_tokens$"):
        data.encode_prompts(tok, ["I loved the cake.", P], 7, ["p.jsonl:1", "p.jsonl:3"])
    with pytest.raises(ValueError, match=r"cannot spell \(p\.jsonl:3\)"):  # a token the vocabulary lacks
        data.encode_prompts(tok, ["I loved the cake.", "Quantum zebra?"], 20, ["p.jsonl:1", "p.jsonl:3"])
    assert data.prompt_room(40, {"policy": 64, "reward model": 48}) == 8
    with pytest.raises(ValueError, match=r"^--max_new_tokens=48: must be < 48, the context \(block_size\) of the "
                                         r"reward model, which holds the prompt too\. lower --max_new_tokens$"):
        data.prompt_room(48, {"policy": 64, "reward model": 48})


def test_read_jsonl_errors_name_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", oops}\n')
    with pytest.raises(ValueError, match=r"malformed JSON .*\(.*d.jsonl:2\)"):
        data.read_jsonl(str(f))
    f.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"missing field.*\(.*d.jsonl:3\)"):
        data.load_sft_jsonl(str(f))
    f.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"expected a JSON object, got list \(.*d.jsonl:1\)"):
        data.read_jsonl(str(f))
    f.write_text("\n\n")
    with pytest.raises(ValueError, match="empty dataset"):
        data.read_jsonl(str(f))
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.read_jsonl(str(tmp_path / "missing.jsonl"))


def test_sft_formats_and_templates(tmp_path):
    f = tmp_path / "d.jsonl"
    rows = [{"prompt": "Say hi.", "completion": " Hi!"},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."},
                          {"role": "assistant", "content": "Hi!"}]}]
    f.write_text(json.dumps(rows[0]))
    g = tmp_path / "m.jsonl"
    g.write_text(json.dumps(rows[1]))
    ((p1, c1, w1),), ((p2, c2, w2),) = data.load_sft_jsonl(str(f), template="instruction"), data.load_sft_jsonl(str(g))
    assert p1 == "### Instruction:\nSay hi.\n\n### Response:\n" and c1 == " Hi!" and w1.endswith("d.jsonl:1")
    assert p2 == "System: Be brief.\n\nUser: Say hi.\n\nAssistant:" and c2 == " Hi!<|endoftext|>"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}))
    with pytest.raises(ValueError, match="ending with an assistant turn"):
        data.load_sft_jsonl(str(f))
    with pytest.raises(ValueError, match="unknown template"):
        data.format_prompt("x", "chatml")


def test_labelers_follow_the_gold_score():
    rng = random.Random(0)
    wins = sum(labelers.label_pair(1.0, 0.5, rng) for _ in range(4000)) / 4000
    assert wins == pytest.approx(1 / (1 + 2.718281828 ** -2), abs=0.03)  # sigmoid(0.5 / 0.25)
    assert labelers.label_tie(0.5, 0.45, rng) is None
    assert labelers.label_likert(1.0, rng, noise=0.0) == 5 and labelers.label_likert(-1.0, rng, noise=0.0) == 1
    firsts = [labelers.label_ranking([1.0, 0.0, -1.0], rng)[0] for _ in range(2000)]
    assert firsts.count(0) / 2000 > 0.9 and sorted(labelers.label_ranking([0.0] * 4, rng)) == [0, 1, 2, 3]


def test_compact_vocab_reads_back_merged_punctuation():
    """A compact model can emit "." "." which decodes to "..", one GPT-2 token outside its vocabulary."""
    tok = data.Tokenizer(task.vocab())
    dot, i = tok.encode(".")[0], tok.encode("I")[0]
    for ids in ([dot, dot], [dot, dot, dot, dot], [i, i, dot]):
        assert tok.encode(tok.decode(ids)) == ids


def test_every_pair_and_triple_of_the_compact_vocabulary_reencodes():
    """Any text a compact model can write encodes back into its vocabulary, to the same text: every
    sequence of 2 and 3 tokens (73^2 + 73^3 = 394,346). " I" + "I" decodes to " II", one GPT-2 token
    outside the vocabulary, which the old character-by-character fallback spelled as " " + "I" + "I"."""
    tok = data.Tokenizer(task.vocab())
    V = tok.vocab_size
    seqs = [[a, b] for a in range(V) for b in range(V)] + [[a, b, c] for a in range(V) for b in range(V) for c in range(V)]
    merged = 0
    for ids in seqs:
        text = tok.decode(ids)
        enc = tok.encode(text)
        assert tok.decode(enc) == text and enc == ids, (ids, text, enc)  # here even the same ids come back
        merged += any(t not in tok.to_model for t in tok.enc.encode(text, allowed_special={data.EOT_TEXT}))
    assert merged > 100  # GPT-2's BPE merges some of them outside the vocabulary (" II", "..")
    i, big_i = tok.encode("I")[0], tok.encode(" I")[0]
    assert tok.encode(" II") == [big_i, i]  # the fewest compact tokens


def test_decode_encode_is_the_identity_on_text():
    tok = data.Tokenizer(task.vocab())
    for text in [" II.", "Notes on the cafe... I.", ".....", " The coffee was great.<|endoftext|>I", " I I II III"]:
        assert tok.decode(tok.encode(text)) == text
