"""``import ib_plugins`` imports torch and nothing heavier (house rule 5), checked in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Toolkits and heavy libraries that the core must not import (numpy and tqdm are left out: torch
#: imports them itself).
HEAVY = ("art", "robustbench", "torchattacks", "pyautoattack", "autoattack", "torchvision", "timm",
         "sklearn", "matplotlib", "scipy", "pandas")


def _run(code: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _loaded_after(statement: str) -> dict:
    return _run(
        "import json, sys\n"
        f"{statement}\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "print(json.dumps({'loaded': loaded}))\n"
    )


def test_import_ib_plugins_loads_no_toolkit():
    result = _loaded_after("import ib_plugins")
    assert result["loaded"] == [], f"import ib_plugins pulled in {result['loaded']}"


def test_import_ib_plugins_adds_nothing_beyond_torch_and_the_stdlib():
    result = _run(
        "import json, sys\n"
        "import torch\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "import ib_plugins\n"
        "after = {m.split('.')[0] for m in sys.modules}\n"
        "new = sorted(after - before - set(sys.stdlib_module_names) - {'ib_plugins'})\n"
        "print(json.dumps({'new': new}))\n"
    )
    assert result["new"] == [], f"import ib_plugins imported {result['new']} on top of torch"


def test_import_core_modules_loads_no_toolkit():
    modules = ("hsic", "layer_selection", "presets", "activation_capture", "bottleneck", "channel_mask",
               "wrap", "errors")
    result = _loaded_after("; ".join(f"import ib_plugins.{m}" for m in modules))
    assert result["loaded"] == []


def test_import_adapters_package_loads_no_toolkit():
    if not (REPO / "ib_plugins" / "adapters" / "__init__.py").exists():
        pytest.skip("ib_plugins/adapters/__init__.py does not exist yet")
    result = _loaded_after("import ib_plugins.adapters")
    assert result["loaded"] == [], f"import ib_plugins.adapters pulled in {result['loaded']}"
