"""Shared fixtures."""

import pytest

from _helpers import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each test using it runs on both backends."""
    return request.param
