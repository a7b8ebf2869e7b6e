"""Kubernetes resource quantities (``500m``, ``1Gi``, ``1``): parsing, and the canonical form kube-apiserver stores and serves.

Follows k8s.io/apimachinery/pkg/api/resource (``ParseQuantity``, ``CanonicalizeBytes``): a
quantity keeps its suffix family (binary ``Ki``..``Ei``, decimal ``n``..``E``), is written with the
largest suffix that keeps an integer mantissa, and binary values below 1024 or with a fraction are
written in decimal form. So ``1024Mi`` becomes ``1Gi``, ``0.5`` becomes ``500m``, ``1`` (a number)
becomes the string ``"1"``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exp: suffix for suffix, exp in _DECIMAL.items()}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)


class QuantityError(ValueError):
    """Not a quantity; the message is the API server's."""


def parse(value: object) -> tuple[Fraction, str]:
    """The quantity's exact value and its format: ``"BinarySI"``, ``"DecimalSI"`` or ``"DecimalExponent"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QuantityError(f"quantities must match the regular expression '{_QUANTITY.pattern}'")
    text = str(value).strip() if not isinstance(value, float) else repr(value)
    match = _QUANTITY.match(text)
    if match is None:
        raise QuantityError(
            f"quantities must match the regular expression "
            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {value!r}"
        )
    number = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * 1024 ** _BINARY[suffix], "BinarySI"
    if suffix[:1] in ("e", "E") and suffix not in _DECIMAL:
        return number * Fraction(10) ** int(suffix[1:]), "DecimalExponent"
    return number * Fraction(10) ** _DECIMAL[suffix], "DecimalSI"


def canonical(value: object) -> str:
    """The string the API server serves for ``value``."""
    amount, form = parse(value)
    # Precision stops at nano units: anything finer rounds up, as ParseQuantity does.
    amount = Fraction(math.ceil(amount * 10**9), 10**9)
    if form == "BinarySI" and (abs(amount) < 1024 or amount.denominator != 1):
        form = "DecimalSI"
    if form == "BinarySI":
        mantissa, power = int(amount), 0
        while mantissa != 0 and mantissa % 1024 == 0 and power < 6:
            mantissa //= 1024
            power += 1
        suffix = {v: k for k, v in _BINARY.items()}.get(power, "")
        return f"{mantissa}{suffix}"
    exponent = -9
    mantissa = int(amount * 10**9)
    while mantissa != 0 and mantissa % 1000 == 0 and exponent < 18:
        mantissa //= 1000
        exponent += 3
    if mantissa == 0:
        return "0"
    if form == "DecimalExponent":
        return f"{mantissa}" if exponent == 0 else f"{mantissa}e{exponent}"
    return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"
