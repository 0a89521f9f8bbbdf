"""Repository-wide pytest setup (applies to tests/ and to the doctests in ib_plugins/).

The test models are tiny: intra-op threads only add overhead, and on a busy machine spinning
OpenMP threads slow such models down many times over. Every test therefore runs on one torch
thread; the previous setting is restored at the end of the session.

The docstring examples create scratch folders with ``tempfile.mkdtemp()``, as a user would. So that
a test run leaves nothing behind in the system's temporary folder, ``tempfile`` points into pytest's
own temporary root for every test, in this process and (through ``TMPDIR``) in the subprocesses the
tests start (pytest keeps the last three runs' roots and deletes older ones).
"""

from __future__ import annotations

import tempfile
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


@pytest.fixture(autouse=True)
def _tempfile_in_pytest_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = str(tmp_path_factory.mktemp("tempfile"))
    monkeypatch.setattr(tempfile, "tempdir", scratch)
    monkeypatch.setenv("TMPDIR", scratch)  # the same for subprocesses (benchmark, examples, torchrun workers)
