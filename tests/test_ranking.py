"""The vocabulary ranking: every path gives exactly torch's stable descending sort."""

from __future__ import annotations

import pytest
import torch

from samplecli.strategies import ranking
from samplecli.strategies.ranking import COMPOSITE_MIN_ELEMENTS, descending, descending_ids, top_ids


def torch_stable(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.sort(x, dim=-1, descending=True, stable=True)


def test_top_alternatives_are_ranked_like_a_stable_sort_even_with_ties():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        logits = torch.randint(0, 4, (3, 50), generator=generator).float()  # many ties
        k = int(torch.randint(1, 20, (), generator=generator))
        assert torch.equal(top_ids(logits, k), torch_stable(logits).indices[:, :k])


@pytest.mark.parametrize("case", ["random", "ties", "signed zeros and infinities", "one row"])
def test_the_composite_sort_is_the_stable_sort(case, monkeypatch):
    calls = []
    composite = ranking._composite_order
    monkeypatch.setattr(ranking, "_composite_order", lambda x: calls.append(x.shape) or composite(x))
    generator = torch.Generator().manual_seed(1)
    columns = COMPOSITE_MIN_ELEMENTS + 123
    x = torch.randn(3, columns, generator=generator) * 4
    if case == "ties":
        x = torch.randint(-3, 3, (3, columns), generator=generator).float() / 2  # thousands of ties per value
    elif case == "signed zeros and infinities":
        x[:, ::5] = 0.0
        x[:, 1::5] = -0.0
        x[:, 2::7] = float("-inf")
        x[:, 3::11] = float("inf")
        x[:, 4::13] = -1e-45  # a subnormal below zero
    elif case == "one row":
        x = x[1]
    values, indices = descending(x)
    expected_values, expected_indices = torch_stable(x)
    assert calls, "the composite path was not taken"
    assert torch.equal(indices, expected_indices)
    assert torch.equal(values, expected_values)
    assert indices.dtype == torch.int64
    assert torch.equal(descending_ids(x), expected_indices)


def test_small_vocabularies_and_other_dtypes_use_torch(monkeypatch):
    monkeypatch.setattr(ranking, "_composite_order", lambda x: pytest.fail("composite path taken"))
    for x in (torch.randn(1, COMPOSITE_MIN_ELEMENTS - 1), torch.randn(2, COMPOSITE_MIN_ELEMENTS, dtype=torch.float64)):
        values, indices = descending(x)
        assert torch.equal(indices, torch_stable(x).indices)
        assert torch.equal(values, torch_stable(x).values)
        assert torch.equal(descending_ids(x), indices)


def test_nan_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(ranking, "_composite_order", lambda x: pytest.fail("composite path taken"))
    x = torch.randn(1, COMPOSITE_MIN_ELEMENTS)
    x[0, 7] = float("nan")
    assert torch.equal(descending(x)[1], torch_stable(x).indices)
    assert torch.equal(descending_ids(x), torch_stable(x).indices)
