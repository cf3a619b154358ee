"""Fixtures; see conftest.py."""
