"""pytest plugin for the vendored ART 1.20.1 tests: offline MNIST, and the IB-classifier swap.

Ours, not ART's (ART's files, in ``vendor/``, are unmodified); ``vendor/pytest.ini`` loads it.

* Data: ART's tests load MNIST with ``art.utils.load_dataset("mnist")``, which downloads
  ``mnist.npz`` into ``art.config.ART_DATA_PATH`` unless it is there. Before ART's conftest imports
  ``art``, the plugin creates a run folder (deleted at the end) holding ``data/mnist.npz`` (the
  vendored first images of MNIST, ``data/mnist_subset.npz``: the first 1000 training and 100 test
  images, all that the selected tests read) and ``home/.art/config.json`` pointing ART's
  ``ART_DATA_PATH`` at ``data``, and points ``HOME`` at ``home`` for the run (ART reads that file in
  every process, AutoAttack's spawned workers included). Iris and diabetes come with scikit-learn.
  Nothing is downloaded.
* Swap (``--ib-wrap``, or the environment variable ``IB_ART_WRAP=1``): ART's PyTorch classifier
  factories of ``tests/utils.py`` are replaced, in every vendored module that holds them (``tests.utils``,
  the conftests, the test modules), by versions that build ART's classifier exactly as ART does
  (same network, same pretrained weights), then wrap its network with
  ``ib_plugins.wrap_model(net, ib_layers=[<its first hidden layer>], alpha=0.0, beta=0.0, num_classes=...)``
  and return ``ib_plugins.adapters.art_training.make_art_classifier(...)`` with a loss of the same
  reduction/weights (an ``IBCrossEntropyLoss`` for a ``CrossEntropyLoss``), an optimizer of the same
  type and hyper-parameters, and every other ``get_params()`` value of ART's classifier (clip values,
  channels_first, preprocessing, defences, device). With alpha = beta = 0 the IB term is zero, so
  every number ART's tests assert is ART's own; what is tested is that the wrapper answers ART's API.
* Threads: one per process unless ``OMP_NUM_THREADS`` is set (see below); torch's compiler stack is
  imported before TensorFlow (see below).
* ``--ib-outcomes=PATH`` writes ``{node id: outcome}`` (passed, failed, error, skipped, xfailed,
  xpassed) as JSON, for ``tests/test_art_upstream.py``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# One thread per process unless the caller says otherwise (before torch and TensorFlow start their
# thread pools): the test models are tiny, and OpenMP threads that spin on a busy 2-core machine slow
# them down many times over (AutoAttack's parallel test, three spawned workers, took 12 minutes
# instead of 1). Plain and wrapped runs get the same setting, so their numbers stay comparable.
_ONE_THREAD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
_THREADS_SET_HERE = "OMP_NUM_THREADS" not in os.environ
for _name in _ONE_THREAD:
    os.environ.setdefault(_name, "1")

# ART's conftest imports TensorFlow. TensorFlow and Triton (which torch imports lazily, for example
# when the first optimizer is built) each load their own LLVM, and loading Triton's after
# TensorFlow's segfaults the process (torch 2.14.1+cu130 with tensorflow-cpu 2.21). This plugin is
# imported before any conftest, so torch's compiler stack, Triton included, is loaded first.
import torch  # noqa: E402
import torch._dynamo  # noqa: E402, F401  (import order matters, see above)

if _THREADS_SET_HERE:
    torch.set_num_threads(1)  # in case torch was imported before this plugin

HERE = Path(__file__).resolve().parent
MNIST_SUBSET = HERE / "data" / "mnist_subset.npz"

#: ART's PyTorch classifier factories of ``tests/utils.py`` that the swap replaces.
#: (``get_attack_classifier_pt`` stays ART's: a one-logit sigmoid model trained with ``BCELoss`` for
#: membership inference, not a classifier with a cross-entropy loss; none of the selected tests uses it.)
SWAPPED_FACTORIES = (
    "get_image_classifier_pt",
    "get_image_classifier_pt_functional",
    "get_tabular_classifier_pt",
    "get_cifar10_image_classifier_pt",
)

_WRAP_ENV = "IB_ART_WRAP"
_STATE = pytest.StashKey[dict]()
_OUTCOMES = pytest.StashKey["_OutcomeRecorder"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ib-plugins", "ib-plugins: ART's tests against IBPyTorchClassifier")
    group.addoption(
        "--ib-wrap",
        action="store_true",
        default=os.environ.get(_WRAP_ENV, "").strip().lower() in ("1", "true", "yes"),
        help=f"build ART's PyTorch test classifiers as IB-wrapped IBPyTorchClassifiers (also {_WRAP_ENV}=1)",
    )
    group.addoption("--ib-outcomes", default=None, metavar="PATH", help="write {node id: outcome} as JSON")


# ---------------------------------------------------------------------------------------------
# Offline MNIST through ART_DATA_PATH, in a HOME of the run's own
# ---------------------------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Before ART's conftest imports ``art``: a run folder with ``data/mnist.npz`` and ``home/.art/config.json``.

    ART reads its data path from ``~/.art/config.json`` when ``art`` is imported, in every process:
    the workers that ``AutoAttack(parallel_pool_size=...)`` spawns read pickled classifiers' weights
    back from ``ART_DATA_PATH``, so ``art.config.set_data_path`` in this process alone is not enough.
    The run therefore gets a HOME of its own (given back at the end, the folder deleted), whose
    ART configuration points at the run's data folder; Keras and other libraries that write under
    ``~`` write there too, and nothing is left in the real home.
    """
    import numpy as np

    root = Path(tempfile.mkdtemp(prefix="art-upstream-"))
    data, home = root / "data", root / "home"
    (home / ".art").mkdir(parents=True)
    data.mkdir()
    with np.load(MNIST_SUBSET) as subset:
        # The layout of Keras' mnist.npz, which art.utils.load_mnist reads.
        np.savez(data / "mnist.npz", **{key: subset[key] for key in subset.files})
    (home / ".art" / "config.json").write_text(json.dumps({"ART_DATA_PATH": str(data)}, indent=4))
    previous_home = os.environ.get("HOME")

    def restore() -> None:
        if previous_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = previous_home
        shutil.rmtree(root, ignore_errors=True)

    early_config.add_cleanup(restore)
    os.environ["HOME"] = str(home)
    early_config.stash[_STATE] = {"data": str(data), "home": str(home)}
    art_config = sys.modules.get("art.config")
    if art_config is not None:  # art was imported earlier (by another plugin): point it here too
        art_config.set_data_path(str(data))


def pytest_configure(config: pytest.Config) -> None:
    recorder = _OutcomeRecorder()
    config.stash[_OUTCOMES] = recorder
    config.pluginmanager.register(recorder, "art_ib_swap_outcomes")


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.getoption("--ib-outcomes")
    recorder = config.stash.get(_OUTCOMES, None)
    if path and recorder is not None:
        report = {
            "wrapped": bool(config.getoption("--ib-wrap")),
            "ib_classifiers_built": dict(sorted(_BUILT.items())),
            "outcomes": recorder.outcomes,
        }
        Path(path).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if config.getoption("--ib-wrap"):
        built = ", ".join(f"{name} x{count}" for name, count in sorted(_BUILT.items())) or "none"
        terminalreporter.write_line(f"ib-plugins: IBPyTorchClassifiers built by the swapped factories: {built}")
    else:
        terminalreporter.write_line("ib-plugins: plain run (ART's own PyTorch classifiers)")


def pytest_sessionstart(session: pytest.Session) -> None:
    from art import config as art_config

    expected = session.config.stash[_STATE]["data"]
    if os.path.realpath(art_config.ART_DATA_PATH) != os.path.realpath(expected):
        raise pytest.UsageError(
            f"ART_DATA_PATH: expected the run's folder {expected}, got {art_config.ART_DATA_PATH} "
            "(art was imported before this plugin set HOME)"
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    import art

    mode = "WRAPPED (IBPyTorchClassifier, alpha=beta=0)" if config.getoption("--ib-wrap") else "plain (ART's own)"
    return [
        f"ib-plugins: ART {art.__version__}; PyTorch test classifiers: {mode}; "
        f"ART_DATA_PATH={config.stash[_STATE]['data']} (vendored MNIST subset), HOME={config.stash[_STATE]['home']}"
    ]


# ---------------------------------------------------------------------------------------------
# The swap
# ---------------------------------------------------------------------------------------------
def _ib_layer(net: Any) -> str:
    """A real hidden layer of ``net``: its first ReLU, else its first leaf module that is not the last."""
    import torch.nn as nn

    leaves = [(name, module) for name, module in net.named_modules() if name and not list(module.children())]
    for name, module in leaves:
        if isinstance(module, nn.ReLU):
            return name
    if len(leaves) < 2:
        raise ValueError(f"no hidden layer to wrap in {type(net).__name__}")
    return leaves[0][0]


def ib_classifier_like(plain: Any) -> Any:
    """The ``IBPyTorchClassifier`` equivalent of ART's ``PyTorchClassifier`` ``plain`` (same network object)."""
    import torch.nn as nn

    from ib_plugins import wrap_model
    from ib_plugins.adapters.art_training import IBCrossEntropyLoss, make_art_classifier

    params = plain.get_params()
    net = params.pop("model")
    loss = params.pop("loss")
    optimizer = params.pop("optimizer")
    ib_model = wrap_model(net, [_ib_layer(net)], alpha=0.0, beta=0.0, num_classes=plain.nb_classes)
    if isinstance(loss, nn.CrossEntropyLoss):
        loss = IBCrossEntropyLoss(
            ib_model,
            weight=loss.weight,
            ignore_index=loss.ignore_index,
            reduction=loss.reduction,
            label_smoothing=loss.label_smoothing,
        )
    if optimizer is not None:
        optimizer = type(optimizer)(ib_model.parameters(), **optimizer.defaults)
    return make_art_classifier(
        ib_model,
        loss=loss,
        optimizer=optimizer,
        input_shape=params.pop("input_shape"),
        nb_classes=params.pop("nb_classes"),
        **params,
    )


_BUILT: dict[str, int] = {}


def _wrapping(factory: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> Any:
        classifier = ib_classifier_like(factory(*args, **kwargs))
        _BUILT[factory.__name__] = _BUILT.get(factory.__name__, 0) + 1
        return classifier

    build.__ib_swapped__ = factory  # type: ignore[attr-defined]
    return build


def _vendored_modules() -> Iterator[Any]:
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(HERE):
            yield module


@pytest.fixture(autouse=True, scope="session")
def _ib_swap_factories(request: pytest.FixtureRequest) -> Iterator[None]:
    """With ``--ib-wrap``: every reference to an ART PyTorch factory in a vendored module is swapped.

    Session-scoped, so it is in place before ``unittest`` classes' ``setUpClass`` (class scope)
    builds their classifiers; it runs after collection, when every test module is imported.
    """
    if not request.config.getoption("--ib-wrap"):
        yield
        return
    import tests.utils as art_test_utils

    originals = {getattr(art_test_utils, name): name for name in SWAPPED_FACTORIES}
    replacements = {original: _wrapping(original) for original in originals}
    with pytest.MonkeyPatch.context() as patch:
        for module in _vendored_modules():
            for attr, value in list(vars(module).items()):
                if callable(value) and value in replacements:
                    patch.setattr(module, attr, replacements[value])
        yield


# ---------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------
_RANK = ("passed", "skipped", "xpassed", "xfailed", "failed", "error")


class _OutcomeRecorder:
    """Keeps the worst outcome of each test's setup/call/teardown."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.skipped:
            outcome = "skipped"
        else:
            outcome = "passed"
        previous = self.outcomes.get(report.nodeid)
        if previous is None or _RANK.index(outcome) > _RANK.index(previous):
            self.outcomes[report.nodeid] = outcome
