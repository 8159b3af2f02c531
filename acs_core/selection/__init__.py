"""Coreset selection: one framework (base.py), the budget policy (budgets.py), the views (views.py), algorithms/ and
one file per selector in selectors/, registered by name in SELECTORS."""
from . import selectors  # noqa: F401  (registration)
from .base import SELECTORS, Coreset, SelectionContext, Selector, build_selector

__all__ = ["SELECTORS", "Coreset", "SelectionContext", "Selector", "build_selector"]
