"""Packaging: what each extra pulls, the licence, the build requirements (static checks of pyproject.toml)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _closure(extra: str, seen: set[str] | None = None) -> set[str]:
    """Distribution names an extra pulls, following ``ib-plugins[...]`` self-references."""
    seen = set() if seen is None else seen
    names: set[str] = set()
    for requirement in EXTRAS[extra]:
        match = re.fullmatch(r"ib-plugins\[([^\]]+)\]", requirement.replace(" ", ""))
        if match:
            for sub in match.group(1).split(","):
                if sub not in seen:
                    seen.add(sub)
                    names |= _closure(sub, seen)
            continue
        names.add(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower())
    return names


def test_all_and_cli_do_not_pull_torchattacks():
    # torchattacks declares requests~=2.25.1: only the opt-in extras and the test extra may pull it
    for extra in ("all", "cli", "data", "plots", "art", "autoattack", "robustbench"):
        assert "torchattacks" not in _closure(extra), extra
        assert "requests" not in {n for n in _closure(extra) if n == "requests"}, extra
    assert "torchattacks" in _closure("torchattacks") and "torchattacks" in _closure("test")
    assert EXTRAS["torchattacks"] == ["torchattacks>=3.5,<3.6"]  # no pins beyond what it declares


def test_licence_and_build_requirements():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert PYPROJECT["project"]["license"] == "MIT" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    build = PYPROJECT["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in build)
    assert "torch>=2.6" in PYPROJECT["project"]["dependencies"]  # CVE-2025-32434: weights_only bypass before 2.6
    urls = PYPROJECT["project"].get("urls", {})
    assert not any("example.invalid" in u for u in urls.values())
