import pytest

from bltlab.vocab import EOS, UNK, ByteVocab, CharVocab, vocab_from_state

TEXTS = ["café", "love ❤️ it", "braille \u2800 blank", "plain ascii"]


@pytest.mark.parametrize("vocab", [CharVocab.build(TEXTS), ByteVocab()], ids=["char", "byte"])
@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(vocab, text):
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert vocab.decode([*ids, EOS, *ids]) == text  # decoding stops at EOS
    assert vocab_from_state(vocab.to_state()).encode(text) == ids


def test_char_vocab_counts_code_points():
    v = CharVocab.build(["❤️"])
    assert len(v.encode("❤️")) == 2  # U+2764 and the variation selector U+FE0F
    assert v.decode(v.encode("❤️"[::-1])) == "\ufe0f\u2764"


def test_unknown_character_is_unk():
    v = CharVocab.build(["abc"])
    assert v.encode("abz") == [v.index["a"], v.index["b"], UNK]


def test_byte_targets_keep_each_characters_bytes_in_order():
    """The reversal target is by code point: its byte ids are not the input's byte ids
    reversed (that would break every multi-byte character)."""
    v = ByteVocab()
    text = "é❤x"
    assert v.encode(text[::-1]) != v.encode(text)[::-1]
    assert v.decode(v.encode(text)[::-1]).count("\ufffd") >= 2  # é and ❤ broken
    assert v.encode(text[::-1])[1:3] == v.encode("❤")[:2]  # ❤'s lead byte first
    assert len(v.encode("é")) == 2 and len(v) == 260
