"""Specification of samplecli.engine.detokenize: streamed deltas, stop strings and the bytes behind each token,
checked against the tiny byte-level BPE tokenizer (whose training text has multi-byte characters)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samplecli.backends.vocabulary import HFVocabulary as TokenTable
from samplecli.engine.detokenize import Detokenizer

REPLACEMENT = "\ufffd"
MULTI_BYTE = ["東京", "🙂", "é", "“quoted”", "Café, naïve, Müller, Ångström"]
ALPHABET = "abcRomeo ,.:\n東京🙂éï“”—"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def table(tokenizer):
    return TokenTable(tokenizer)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_bytewise(tokenizer, text: str) -> list[int]:
    """One token per byte: every multi-byte character is split across tokens."""
    ids = []
    for ch in text:
        ids += encode(tokenizer, ch)
    return ids


def encode_charwise(tokenizer, text: str) -> list[int]:
    """The ids of `text` one character at a time, so a push adds exactly one character (ASCII only)."""
    ids = []
    for ch in text:
        piece = encode(tokenizer, ch)
        assert len(piece) == 1, f"{ch!r} is not a single token"
        ids += piece
    return ids


def stream(tokenizer, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], str, Detokenizer]:
    detok = Detokenizer(tokenizer, stop)
    deltas = [detok.push(i) for i in ids]
    return deltas, detok.finish(), detok


def random_ids(tokenizer):
    return st.lists(st.integers(0, len(tokenizer) - 1), max_size=24)


def continuation_byte_ids(tokenizer, table) -> list[int]:
    """Tokens that are a single UTF-8 continuation byte (0x80-0xBF): appending one can complete a character."""
    return [i for i in range(len(tokenizer)) if len(table.bytes(i)) == 1 and 0x80 <= table.bytes(i)[0] <= 0xBF]


# --- Detokenizer: deltas ------------------------------------------------------------------------------------


def test_streamed_deltas_concatenate_to_the_full_decode_for_random_ids(tokenizer):
    @PROPERTY
    @given(random_ids(tokenizer))
    def check(ids):
        deltas, tail, _ = stream(tokenizer, ids)
        assert "".join(deltas) + tail == tokenizer.decode(ids, skip_special_tokens=True)

    check()


def test_an_emitted_delta_is_final_whatever_token_comes_next(tokenizer, table):
    """Never half a UTF-8 character: what was shown after k tokens is a prefix of the decode of those
    k tokens followed by any further token, even one that completes a pending character."""
    continuations = continuation_byte_ids(tokenizer, table)
    assert len(continuations) >= 32

    @PROPERTY
    @given(random_ids(tokenizer), st.lists(st.sampled_from(continuations), min_size=1, max_size=3))
    def check(ids, extra):
        full = tokenizer.decode(ids, skip_special_tokens=True)
        detok = Detokenizer(tokenizer)
        shown = ""
        for k, token_id in enumerate(ids, 1):
            shown += detok.push(token_id)
            for c in extra:
                assert tokenizer.decode(ids[:k] + [c], skip_special_tokens=True).startswith(shown)
            # where a replacement character is shown, the full decode has one at that spot
            assert all(full[i] == REPLACEMENT for i, ch in enumerate(shown) if ch == REPLACEMENT)

    check()


@pytest.mark.parametrize("text", MULTI_BYTE)
@pytest.mark.parametrize("split", ["bpe", "bytewise"])
def test_valid_text_never_streams_a_replacement_character(tokenizer, text, split):
    ids = encode(tokenizer, text) if split == "bpe" else encode_bytewise(tokenizer, text)
    deltas, tail, _ = stream(tokenizer, ids)
    assert all(REPLACEMENT not in d for d in deltas)
    assert "".join(deltas) + tail == text
    assert tail == ""


@PROPERTY
@given(st.text(ALPHABET, max_size=30), st.booleans())
def test_valid_text_streams_back_exactly(tokenizer, text, bytewise):
    ids = encode_bytewise(tokenizer, text) if bytewise else encode(tokenizer, text)
    deltas, tail, _ = stream(tokenizer, ids)
    assert "".join(deltas) == text
    assert tail == ""
    assert all(REPLACEMENT not in d for d in deltas)


def test_a_character_split_across_tokens_appears_when_its_last_byte_arrives(tokenizer):
    ids = encode_bytewise(tokenizer, "東京")
    assert len(ids) == 6
    deltas, tail, _ = stream(tokenizer, ids)
    assert deltas == ["", "", "東", "", "", "京"]
    assert tail == ""


def test_finish_shows_an_incomplete_character_at_the_end_as_a_replacement(tokenizer):
    ids = encode_bytewise(tokenizer, "a🙂")[:-1]  # 'a' and three of the emoji's four bytes
    deltas, tail, _ = stream(tokenizer, ids)
    assert deltas == ["a", "", "", ""]
    assert tail == REPLACEMENT == tokenizer.decode(ids, skip_special_tokens=True)[1:]


def test_special_tokens_add_no_text(tokenizer):
    eos = tokenizer.eos_token_id
    ids = [eos, *encode(tokenizer, "Romeo"), eos]
    deltas, tail, _ = stream(tokenizer, ids)
    assert deltas[0] == "" and deltas[-1] == ""
    assert "".join(deltas) + tail == "Romeo"


# --- Detokenizer: stop strings ------------------------------------------------------------------------------


def test_text_is_cut_before_the_stop_string_which_is_never_emitted(tokenizer):
    ids = encode(tokenizer, "ROMEO:\nBut soft, what light")
    deltas, tail, detok = stream(tokenizer, ids, stop=("\nBut",))
    assert "".join(deltas) + tail == "ROMEO:"
    assert detok.text == "ROMEO:"
    assert detok.stopped
    assert all("\nBut" not in d for d in deltas)


def test_nothing_is_emitted_after_the_stop(tokenizer):
    detok = Detokenizer(tokenizer, ("soft",))
    emitted = "".join(detok.push(i) for i in encode(tokenizer, "But soft"))
    assert detok.stopped
    assert all(detok.push(i) == "" for i in encode(tokenizer, " what light"))
    assert detok.finish() == ""
    assert emitted == "But "


def test_a_stop_string_spanning_several_tokens_is_caught(tokenizer):
    ids = encode(tokenizer, "It is the east, and Juliet is the sun.")
    juliet = encode(tokenizer, "Juliet")
    assert len(juliet) >= 3  # 'Ju', 'li', 'e', 't'
    deltas, tail, detok = stream(tokenizer, ids, stop=("Juliet",))
    assert detok.stopped
    assert "".join(deltas) + tail == "It is the east, and "


def test_a_stop_string_of_multi_byte_characters_split_into_bytes_is_caught(tokenizer):
    ids = encode_bytewise(tokenizer, "Café, 東京 🙂")
    deltas, tail, detok = stream(tokenizer, ids, stop=("東京",))
    assert detok.stopped
    assert "".join(deltas) + tail == "Café, "
    assert all(REPLACEMENT not in d for d in deltas)


def test_text_that_only_looks_like_a_stop_prefix_is_held_then_released(tokenizer):
    deltas, tail, detok = stream(tokenizer, encode_charwise(tokenizer, "xabxab"), stop=("abc",))
    assert deltas == ["x", "", "", "abx", "", ""]
    assert tail == "ab"
    assert not detok.stopped


def test_a_stop_prefix_at_the_very_end_is_released_by_finish(tokenizer):
    deltas, tail, detok = stream(tokenizer, encode(tokenizer, "O Romeo, Rom"), stop=("Romeo!",))
    assert "".join(deltas) + tail == "O Romeo, Rom"
    assert "".join(deltas) == "O Romeo, "
    assert not detok.stopped


@pytest.mark.parametrize("stop", [(" t", "he"), ("he", " t")])
def test_of_several_stop_strings_the_earliest_occurrence_wins(tokenizer, stop):
    ids = encode(tokenizer, "x the")
    assert tokenizer.convert_ids_to_tokens(ids) == ["x", "Ġthe"]  # both stops complete in one push
    deltas, tail, detok = stream(tokenizer, ids, stop=stop)
    assert detok.stopped
    assert "".join(deltas) + tail == "x"


def test_the_stop_string_that_completes_first_ends_the_stream(tokenizer):
    deltas, tail, _ = stream(tokenizer, encode_charwise(tokenizer, "one two three"), stop=("three", "two"))
    assert "".join(deltas) + tail == "one "


def _expected_emitted(text: str, stops: tuple[str, ...]) -> str:
    """What may be shown of `text` (no stop string in it yet): all but the longest suffix that could
    still grow into a stop string."""
    start = min(i for i in range(len(text) + 1) if any(s.startswith(text[i:]) for s in stops))
    return text[:start]


@PROPERTY
@given(st.text("ab \n", max_size=24), st.lists(st.text("ab \n", min_size=1, max_size=3), min_size=1, max_size=3))
def test_stop_strings_streamed_character_by_character(tokenizer, text, stop_list):
    stops = tuple(stop_list)
    detok = Detokenizer(tokenizer, stops)
    shown = ""
    for j, token_id in enumerate(encode_charwise(tokenizer, text), 1):
        shown += detok.push(token_id)
        so_far = text[:j]
        hits = [so_far.find(s) for s in stops if s in so_far]
        if hits:
            assert detok.stopped
            assert shown == so_far[: min(hits)] == detok.text
            break
        assert not detok.stopped
        assert shown == _expected_emitted(so_far, stops)
    else:
        shown += detok.finish()
        assert shown == text
    assert not any(s in shown for s in stops)


# --- TokenTable ---------------------------------------------------------------------------------------------


def test_the_tiny_tokenizer_is_byte_level(table):
    assert table.byte_level


def test_token_text_is_the_decode_of_the_token_alone(tokenizer, table):
    for token_id in range(len(tokenizer)):
        assert table.text(token_id) == tokenizer.decode([token_id])


@PROPERTY
@given(st.text(ALPHABET, max_size=30), st.booleans())
def test_token_bytes_concatenate_to_the_utf8_of_valid_text(tokenizer, table, text, bytewise):
    ids = encode_bytewise(tokenizer, text) if bytewise else encode(tokenizer, text)
    joined = b"".join(bytes(table.bytes(i)) for i in ids)
    assert joined == tokenizer.decode(ids).encode("utf-8") == text.encode("utf-8")


def test_token_bytes_of_random_ids_decode_like_the_tokenizer(tokenizer, table):
    @PROPERTY
    @given(random_ids(tokenizer))
    def check(ids):
        joined = b"".join(bytes(table.bytes(i)) for i in ids)
        assert joined.decode("utf-8", errors="replace") == tokenizer.decode(ids)

    check()


def test_a_byte_token_is_that_one_byte(tokenizer, table):
    ids = encode_bytewise(tokenizer, "é")
    assert [table.bytes(i) for i in ids] == [(0xC3,), (0xA9,)]
    assert all(isinstance(b, int) for i in range(len(tokenizer)) for b in table.bytes(i))
