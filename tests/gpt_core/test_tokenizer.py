import json

import pytest

from gpt_core.tokenizer import (
    EOT,
    EOT_ID,
    TOKENIZER_NAME,
    Tokenizer,
    TokenizerError,
    _offline_gpt2,
    get_tokenizer,
    gpt2_files,
    load_tokenizer,
    tokenizer_of,
)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer()


def test_known_ids(tok):
    assert tok.encode("Once upon a time") == [7454, 2402, 257, 640]
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(EOT, allow_special=True) == [EOT_ID]
    assert tok.encoding.n_vocab == 50257


def test_special_token_is_plain_text_unless_allowed(tok):
    assert EOT_ID not in tok.encode(f"a{EOT}b")
    assert tok.encode(f"a{EOT}b", allow_special=True).count(EOT_ID) == 1


@pytest.mark.parametrize(
    "text",
    [
        "Once upon a time, there was a little girl named Lily.",
        "  leading and trailing spaces  \n\n\ttabs\r\nwindows lines",
        "Unicode: café, naïve, 東京, emoji 🐉🎉, math ∑∫, Zürich — “quotes” and ‘apostrophes’",
        "mojibake â€œ kept as is",
        f"story one.{EOT}story two.{EOT}",
        "",
    ],
)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text, allow_special=True)) == text


def test_offline_build_verifies_hashes_and_matches():
    enc = _offline_gpt2()  # raises if the shipped files' sha256 differ from tiktoken's expected hashes
    assert enc.encode_ordinary("The brave knight") == Tokenizer().encode("The brave knight")


# ---- a trained tokenizer (tokenizer.json), and how a tokenizer is found and told apart ----
TEXTS = [
    "Once upon a time, there was a little girl named Lily.",
    "  leading and trailing spaces  \n\n\ttabs\r\nwindows lines",
    "Unicode: café, naïve, 東京, emoji 🐉🎉, math ∑∫, Zürich — “quotes” and ‘apostrophes’",
    "",
]


@pytest.fixture(scope="module")
def story(story_tokenizer):
    return load_tokenizer(story_tokenizer)


@pytest.mark.parametrize("text", TEXTS)
def test_a_trained_tokenizer_gives_back_every_byte(story, text):
    ids = story.encode(text)
    assert story.decode(ids) == text
    assert b"".join(story.decode_bytes([i]) for i in ids) == text.encode()  # token by token, as generate streams
    assert all(0 <= i < story.vocab_size for i in ids)


def test_a_trained_tokenizer_reserves_end_of_text(story):
    assert story.vocab_size == 512 and story.token_dtype == "uint16"
    assert story.encode(EOT, allow_special=True) == [story.eot_id]
    assert story.eot_id not in story.encode(f"a{EOT}b")  # written in a story, it is text
    assert story.encode(f"a{EOT}b", allow_special=True).count(story.eot_id) == 1
    assert story.decode(story.encode(f"a{EOT}b", allow_special=True)) == f"a{EOT}b"


def test_a_tokenizer_is_known_by_its_content_not_its_path(story, story_tokenizer, tmp_path):
    copy = tmp_path / "elsewhere.json"
    copy.write_bytes((story_tokenizer / TOKENIZER_NAME).read_bytes())
    assert load_tokenizer(copy).fingerprint == story.fingerprint != get_tokenizer().fingerprint
    assert tokenizer_of(story_tokenizer).fingerprint == story.fingerprint
    assert tokenizer_of(tmp_path) is get_tokenizer()  # weights without a tokenizer.json: GPT-2 BPE


def test_gpt2s_own_tokenizer_json_is_gpt2_bpe(tmp_path):
    from tokenizers import AddedToken, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    gpt2 = Backend(models.BPE.from_file(*map(str, gpt2_files())))
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    gpt2.add_special_tokens([AddedToken(EOT, special=True)])
    gpt2.save(str(tmp_path / TOKENIZER_NAME))
    assert load_tokenizer(tmp_path) is get_tokenizer()  # an export's or the Hub's: served by tiktoken


def test_past_65536_tokens_ids_need_uint32(story_tokenizer, tmp_path):
    data = json.loads((story_tokenizer / TOKENIZER_NAME).read_text())
    vocab = data["model"]["vocab"]
    vocab.update({f"w{i}": len(vocab) + i for i in range(70_000)})  # never produced (no merges), but counted
    (tmp_path / TOKENIZER_NAME).write_text(json.dumps(data))
    big = load_tokenizer(tmp_path)
    assert big.vocab_size == 70_512 and big.token_dtype == "uint32"
    assert get_tokenizer().token_dtype == "uint16"


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "no tokenizer.json there"),
        ("[1, 2]", "not a tokenizer.json"),
        ("{not json", "not a readable tokenizer.json"),
        ('{"model": {"type": "WordPiece", "vocab": {}}, "added_tokens": []}', "not a byte-level BPE"),
        ('{"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "ByteLevel"}}', f"no {EOT}"),
        (
            '{"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "ByteLevel"}, '
            '"added_tokens": [{"id": 1, "content": "<|endoftext|>", "special": true}]}',
            "not a usable tokenizer.json",
        ),
    ],
)
def test_an_unusable_tokenizer_is_one_line_naming_the_fix(tmp_path, content, problem):
    if content is not None:
        (tmp_path / TOKENIZER_NAME).write_text(content)
    with pytest.raises(TokenizerError, match=problem) as e:
        load_tokenizer(tmp_path)
    assert "\n" not in str(e.value)
