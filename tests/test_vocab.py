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


def test_byte_vocab_reverses_characters_not_bytes():
    v = ByteVocab()
    text = "é❤️x"
    assert v.decode(v.encode(text[::-1])) == text[::-1]
    assert len(v.encode("é")) == 2 and len(v) == 260
