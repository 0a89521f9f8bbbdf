"""``import ib_plugins`` imports torch and nothing heavier (house rule 5), checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HAS_ADAPTERS = (REPO / "ib_plugins" / "adapters" / "__init__.py").exists()

#: Toolkits and heavy libraries the core must not import (numpy and tqdm are left out: torch itself
#: imports them).
HEAVY = ("art", "robustbench", "torchattacks", "pyautoattack", "autoattack", "torchvision", "timm",
         "sklearn", "matplotlib", "scipy", "pandas")

_PROBE = """
import json, sys
def tops():
    return {m.split('.')[0] for m in sys.modules}
heavy = set(HEAVY)
report = {}
import torch
with_torch = tops()
import ib_plugins
import ib_plugins.hsic, ib_plugins.layer_selection, ib_plugins.presets, ib_plugins.activation_capture
import ib_plugins.bottleneck, ib_plugins.channel_mask, ib_plugins.wrap, ib_plugins.errors
core = tops()
report['core_heavy'] = sorted(core & heavy)
report['core_new'] = sorted(core - with_torch - set(sys.stdlib_module_names) - {'ib_plugins'})
if HAS_ADAPTERS:
    import ib_plugins.adapters
    report['adapters_heavy'] = sorted(tops() & heavy)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def import_report() -> dict:
    code = f"HEAVY = {HEAVY!r}\nHAS_ADAPTERS = {HAS_ADAPTERS!r}\n" + _PROBE
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_ib_plugins_loads_no_toolkit(import_report):
    assert import_report["core_heavy"] == [], f"import ib_plugins pulled in {import_report['core_heavy']}"


def test_import_ib_plugins_adds_nothing_beyond_torch_and_the_stdlib(import_report):
    assert import_report["core_new"] == [], f"import ib_plugins imported {import_report['core_new']} on top of torch"


@pytest.mark.skipif(not HAS_ADAPTERS, reason="ib_plugins/adapters/__init__.py does not exist yet")
def test_import_adapters_package_loads_no_toolkit(import_report):
    assert import_report["adapters_heavy"] == [], (
        f"import ib_plugins.adapters pulled in {import_report['adapters_heavy']}"
    )
