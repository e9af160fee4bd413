"""Parsers for list- and mapping-valued sampler parameters: token id sequences and id -> bias maps.

A `--chain` element is split on `,` and `:`, so these values use neither. In `--chain` text:

    token sequences   "12 13;15"          ids separated by spaces, sequences by `;`   -> ((12, 13), (15,))
    token biases      "15=-inf;42=2.5"    ID=BIAS pairs separated by `;`              -> {15: -inf, 42: 2.5}
    sequence biases   "12 13=-2;15=1"     IDS=BIAS pairs separated by `;`             -> {(12, 13): -2.0, (15,): 1.0}

Presets and Python callers may give the natural structures instead: a list of lists of ids (a flat list of
ids is one single-token sequence per id), a table/dict {id: bias}, a list of [id, bias] pairs, or
transformers' `sequence_bias` form [[[ids], bias], ...]. A bias is a number or -inf (ban); NaN and +inf are
refused. Each parser raises ValueError or TypeError saying what is wrong, and Param turns that into one
UsageError line naming the parameter and the value.
"""

from __future__ import annotations

import math
from typing import Any


def _token_id(value: Any) -> int:
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("+").isdigit():
            raise ValueError(f"`{text}` is not a token id")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a token id")
    if value < 0:
        raise ValueError(f"token id {value} is negative")
    return value


def parse_bias(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"bias `{value.strip()}` is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"bias {value!r} is not a number")
    value = float(value)
    if math.isnan(value) or value == math.inf:
        raise ValueError(f"bias {value} is not allowed (a number, or -inf to ban)")
    return value


def _sequence(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if not items:
        raise ValueError("a token sequence is empty")
    return tuple(_token_id(v) for v in items)


def _no_repeats(keys: list, what: str) -> None:
    seen = set()
    for key in keys:
        if key in seen:
            shown = " ".join(map(str, key)) if isinstance(key, tuple) else key
            raise ValueError(f"{what} `{shown}` is given twice")
        seen.add(key)


def token_sequences(value: Any) -> tuple[tuple[int, ...], ...]:
    """Token id sequences, e.g. bad words or DRY sequence breakers: "12 13;15" or [[12, 13], [15]]."""
    if isinstance(value, str):
        parts = [p for p in value.split(";")]
        if not value.strip():
            return ()
        if any(not p.strip() for p in parts):
            raise ValueError("an empty sequence between `;`")
        sequences = [_sequence(p) for p in parts]
    elif isinstance(value, (list, tuple)):
        sequences = [_sequence(v) for v in value]
    else:
        sequences = [_sequence(value)]
    _no_repeats(sequences, "sequence")
    return tuple(sequences)


def _pairs(value: Any) -> list[tuple[Any, Any]]:
    """(key, bias) pairs from "K=B;K=B", a dict, or a list of [key, bias] pairs."""
    if isinstance(value, str):
        if not value.strip():
            return []
        pairs = []
        for part in value.split(";"):
            key, eq, bias = part.rpartition("=")
            if not eq or not key.strip():
                raise ValueError(f"`{part.strip()}` is not KEY=BIAS")
            pairs.append((key, bias))
        return pairs
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        pairs = []
        for item in value:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError(f"{item!r} is not a [key, bias] pair")
            pairs.append((item[0], item[1]))
        return pairs
    raise TypeError(f"expected KEY=BIAS pairs, got {type(value).__name__}")


def token_biases(value: Any) -> dict[int, float]:
    """A map token id -> additive logit bias: "15=-inf;42=2.5", {15: -inf, "42": 2.5} or [[15, -inf]]."""
    pairs = [(_token_id(k), parse_bias(b)) for k, b in _pairs(value)]
    _no_repeats([k for k, _ in pairs], "token")
    return dict(pairs)


def sequence_biases(value: Any) -> dict[tuple[int, ...], float]:
    """A map token sequence -> bias: "12 13=-2;15=1", {"12 13": -2} or [[[12, 13], -2.0], [[15], 1.0]]."""
    pairs = [(_sequence(k), parse_bias(b)) for k, b in _pairs(value)]
    _no_repeats([k for k, _ in pairs], "sequence")
    return dict(pairs)


def token_ids(value: Any) -> tuple[int, ...]:
    """A set of token ids, e.g. end-of-sequence ids: 0, "0 2", "0;2" or [0, 2] (order kept, no repeats)."""
    if isinstance(value, str):
        ids = [_token_id(v) for v in value.replace(";", " ").split()]
    elif isinstance(value, (list, tuple)):
        ids = [_token_id(v) for v in value]
    else:
        ids = [_token_id(value)]
    _no_repeats(ids, "token")
    return tuple(ids)
