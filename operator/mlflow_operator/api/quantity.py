"""Kubernetes resource quantities in Python, as the API server's CEL `isQuantity`/`quantity()`
read them (k8s.io/apimachinery/pkg/api/resource): the Python twins of the quantity rules."""
from __future__ import annotations

import re
from fractions import Fraction

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE])?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: int | str) -> Fraction | None:
    """The quantity's exact value, or None when it is not a quantity."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    match = _QUANTITY.match(value)
    if not match:
        return None
    number = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * Fraction(10) ** _DECIMAL[suffix]
    if suffix:
        return number * Fraction(10) ** int(suffix[1:])
    return number


def is_quantity(value: int | str) -> bool:
    return parse_quantity(value) is not None


# CEL over an int-or-string expression `x` (quantities may be written as integers).
def cel_is_quantity(x: str) -> str:
    return f"isQuantity(string({x}))"


def cel_quantity(x: str) -> str:
    return f"quantity(string({x}))"
