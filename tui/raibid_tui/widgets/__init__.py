"""Widgets, grouped by area: one module per tab plus the shared pieces."""
