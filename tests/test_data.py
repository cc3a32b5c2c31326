"""data.py: JSONL readers and their errors, prompt formatting, the built-in task and its gold scorer."""
import json
import random

import pytest

import data
import labelers
import task

P = "I went to the cafe with friends."


@pytest.mark.parametrize("response, expected", [
    (" The coffee was great.<|endoftext|>", 1.0),
    (" The coffee was good.<|endoftext|>", 0.5),
    (" The coffee was very good.<|endoftext|>", 0.75),  # intensifier: 1.5 x 0.5
    (" The coffee was not bad.<|endoftext|>", 0.25),  # litotes: -0.5 x -0.5
    (" The coffee was great and awful.<|endoftext|>", 0.0),
    (" I hated the cake. I would go again.<|endoftext|>", 0.0),
    (" The film was great.<|endoftext|>", 0.0),  # off-topic for a cafe
    (" The coffee was great. The coffee was great.<|endoftext|>", 0.0),  # repeated: (1 - 1) / 2
    (" great great great<|endoftext|>", -1.0),  # does not parse
    (" The coffee was great", -1.5),  # a fragment that never ends: -1, and -0.5 for not ending
    (" The coffee was great.", 0.5),  # grammatical but never ended
    ("<|endoftext|>", -1.0),  # empty
    (" The coffee was great. The tea was great. The cake was great. The staff was great. "
     "The music was great.<|endoftext|>", 0.75),  # five sentences: -0.25 for the one beyond four
])
def test_gold_worked_examples(response, expected):
    assert task.gold(P, response) == pytest.approx(expected)


def test_parses():
    assert task.parses(P, " The coffee was great.<|endoftext|>")
    assert task.parses(P, " The film was great.<|endoftext|>")  # off-topic is still grammatical
    assert not task.parses(P, " The coffee was great.")  # not ended
    assert not task.parses(P, " The coffee were great.<|endoftext|>")


def test_demos_are_in_the_grammar_and_neutral_on_average():
    demos = task.demos(2000, seed=0)
    assert all(task.parses(p, c) for p, c in demos)
    g = [task.gold(p, c) for p, c in demos]
    assert -0.2 < sum(g) / len(g) < 0.2  # the SFT data has no sentiment preference: RLHF must add it
    sentences = {s for _, c in task.demos(20000, seed=1) for s in c.replace(data.EOT_TEXT, "").split(".")}
    assert len(sentences) > 2000  # thousands of distinct sentences


def test_prompt_split_and_vocab():
    train, test = task.prompts("train"), task.prompts("test")
    assert len(test) == 50 and len(train) == 202 and not set(train) & set(test)
    vocab = task.vocab()
    tok = data.Tokenizer(vocab)
    assert tok.vocab_size == len(vocab) < 100 and vocab[tok.eot] == data.EOT
    for p, c in task.demos(300, seed=3):
        assert tok.decode(tok.encode(p + c)) == p + c
    with pytest.raises(ValueError, match="compact vocabulary .* cannot spell"):
        tok.encode("Hello world")
    full = data.Tokenizer()
    assert full.vocab_size == 50257 and full.decode(full.encode("Hello world")) == "Hello world"


def test_encode_prompts_rejects_too_long(tmp_path):
    tok = data.Tokenizer(task.vocab())
    (tmp_path / "p.jsonl").write_text('{"prompt": "I went to the cafe."}\n\n{"prompt": "%s"}\n' % P)
    prompts, where = data.load_prompts(str(tmp_path / "p.jsonl"), lines=True)  # each prompt's file:line
    assert prompts == ["I went to the cafe.", P] and where == [f"{tmp_path}/p.jsonl:1", f"{tmp_path}/p.jsonl:3"]
    assert len(data.encode_prompts(tok, [P], 20)[0]) == 8  # I went to the cafe with friends .
    with pytest.raises(ValueError, match=r"^the prompt has 8 tokens; the context leaves it 1\.\.5 .*\(prompt 0\)"):
        data.encode_prompts(tok, [P], 5)
    with pytest.raises(ValueError, match=r"has 8 tokens.* \(p\.jsonl:3\)\. shorten it, or lower --max_new_tokens$"):
        data.encode_prompts(tok, ["I went to the cafe.", P], 7, ["p.jsonl:1", "p.jsonl:3"])
    with pytest.raises(ValueError, match=r"cannot spell \(p\.jsonl:3\)"):  # a token the vocabulary lacks
        data.encode_prompts(tok, ["I went to the cafe.", "Quantum zebra?"], 20, ["p.jsonl:1", "p.jsonl:3"])
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
    sequence of 2 and 3 tokens (79^2 + 79^3 = 499,280). " I" + "I" decodes to " II", one GPT-2 token
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
    for text in [" II.", "I went to the cafe... I.", ".....", " The coffee was great.<|endoftext|>I", " I I II III"]:
        assert tok.decode(tok.encode(text)) == text
