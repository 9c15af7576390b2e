"""Shared fixtures."""

from tests.lsserver import label_studio  # noqa: F401
