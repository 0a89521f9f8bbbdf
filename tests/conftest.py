"""Shared pytest configuration: markers, a seeded RNG for every test, opt-in helper fixtures.

Everything here is opt-in except :func:`_seed_torch`, which only calls ``torch.manual_seed(0)``
before each test (the other test files that seed on their own are unaffected).
"""

from __future__ import annotations

import pytest
import torch

# ART 1.20.1's own tests, vendored with their own pytest.ini, conftest and `tests` package: they run
# in a pytest process of their own (tests/test_art_upstream.py, or `pytest tests/art_upstream/vendor`), never
# collected by the repository's run.
collect_ignore = ["art_upstream"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a slow test (timing measurements, larger models)")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped with a reason when none is available")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device, and torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Seed torch's global RNG before every test (tests then draw from local generators too)."""
    torch.manual_seed(0)


@pytest.fixture
def gen() -> torch.Generator:
    """A fresh CPU generator seeded with 0."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: tiny models run fastest (and most reproducibly) that way."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
