"""Coreset selectors: one file each, registered by name in SELECTORS (import the file below to add one)."""
from .base import SELECTORS, Coreset, SelectionContext, Selector, build_selector
from . import craig, full, gradmatch, random  # noqa: F401  (registration)

__all__ = ["SELECTORS", "Coreset", "SelectionContext", "Selector", "build_selector"]
