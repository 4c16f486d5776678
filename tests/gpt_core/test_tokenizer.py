import pytest

from gpt_core.tokenizer import EOT, EOT_ID, Tokenizer, _offline_gpt2


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
