"""Shared test set-up."""

from __future__ import annotations

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog():
    """The CLI configures structlog globally; give every test the library defaults back."""
    yield
    structlog.reset_defaults()
