"""Resource quantities in the canonical form kube-apiserver serves (k8s.io/apimachinery resource.Quantity)."""

from __future__ import annotations

import pytest

from airflow_canary.local.apiserver.quantity import QuantityError, canonical


@pytest.mark.parametrize(
    ("given", "served"),
    [
        (1, "1"),
        ("1", "1"),
        ("1000m", "1"),
        ("0.5", "500m"),
        ("100m", "100m"),
        ("2000", "2k"),
        ("1024Mi", "1Gi"),
        ("1536Mi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("128974848", "128974848"),
        ("129e6", "129e6"),
        ("129M", "129M"),
        ("0", "0"),
    ],
)
def test_canonical_form(given: object, served: str) -> None:
    assert canonical(given) == served


@pytest.mark.parametrize("bad", ["one", "1.2.3", "5 Gi", True, None])
def test_not_a_quantity(bad: object) -> None:
    with pytest.raises(QuantityError, match="quantities must match the regular expression"):
        canonical(bad)
