"""Repository-wide pytest setup (applies to tests/ and to the doctests in ib_plugins/).

The test models are tiny: intra-op threads only add overhead, and on a busy machine spinning
OpenMP threads slow such models down many times over. Every test therefore runs on one torch
thread; the previous setting is restored at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
