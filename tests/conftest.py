"""Shared fixtures."""

import pytest

from pybackprop import _threads

from _helpers import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each test using it runs on both backends."""
    return request.param


@pytest.fixture
def cut_by_units(monkeypatch):
    """Fits cut by hidden units into two blocks, whatever the machine."""
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", True)
    monkeypatch.setattr(_threads, "FORCE_BLOCKS", 2)

