"""How numeric factors (imbalance factor, guidance scale) appear in paths and are compared."""
from __future__ import annotations


def factor_label(value: float) -> str:
    """A factor's label in paths: 10, 2.5, 0.8. Exact: float(factor_label(v)) == v for every
    float v (1.2345678 stays 1.2345678, not 1.23457), so a label names one value; stages compare
    labels, never re-parsed floats."""
    short = f"{value:g}"
    return short if float(short) == float(value) else repr(float(value))


def same_factor(a, b) -> bool:
    """Whether two factor values (numbers or labels) are the same factor, compared by label."""
    return factor_label(float(a)) == factor_label(float(b))
