"""RobustBench-style model-info files and leaderboards (markdown and a self-contained HTML page).

A *model-info file* is RobustBench's JSON description of one evaluated model, stored as
``model_info/<dataset>/<threat_model>/<model_id>.json`` (RobustBench 1.1.1 ``ModelInfo``,
``robustbench/utils.py``): the fields ``link, name, authors, additional_data,
number_forward_passes, dataset, venue, architecture, eps, clean_acc, reported, corruptions_acc,
corruptions_acc_3d, corruptions_mce, corruptions_mce_3d, autoattack_acc, footnote``, plus the
curated files' ``unreliable`` (AutoAttack evaluation potentially unreliable) and ``external`` (best
known robust accuracy). Accuracies are **percentage strings** (``"72.91"``), as RobustBench's
``update_json`` writes them. Files written by :mod:`ib_plugins` add ``n`` (the number of evaluated
examples) and an ``ib_plugins`` object (IB settings, attack-suite results); other unknown keys are
kept as they are. Files without ``n`` (RobustBench's own, or written by older versions) still load:
their ``n`` is unknown (None), unless ``ib_plugins.n_examples`` gives it.

:class:`LeaderboardEntry` reads (validating the schema), writes and ranks such files;
:func:`render_markdown` gives the table RobustBench's ``list_available_models`` prints;
:func:`render_html` a standalone page with the columns of RobustBench's leaderboard (no external
resources, click a column header to sort); :func:`render_leaderboard` writes both.

An entry evaluated at another radius than RobustBench's standard one for its dataset and threat
model (:data:`STANDARD_EPS`: CIFAR-10 L∞ 8/255, CIFAR-10 L2 0.5, CIFAR-100 L∞ 8/255, ImageNet L∞
4/255) is marked *non-standard* in both tables, with a note. :func:`robustbench_submission` fills
RobustBench's "New Model(s)" issue template from an entry.

Ranking follows RobustBench: by the best known robust accuracy (``external`` when present, else
the AutoAttack accuracy), descending. Entries of different datasets or threat models are listed
in separate tables. Both tables show each entry's ``n`` and a 95 % Wilson score interval
(:func:`ib_plugins.stats.wilson_interval`, re-exported here) of its clean and robust accuracy; a table whose entries differ in ``n``
or ε, and a leaderboard mixing datasets or threat models, carry a visible note saying so. In the
markdown every user-supplied field is escaped (:mod:`ib_plugins._markdown`) and only ``http(s)``
links are made links.

This module imports only the standard library and torch.

Example:
    >>> e = LeaderboardEntry(model_name="ib_rar_digits", dataset="digits", threat_model="Linf", eps=0.1,
    ...                      clean_acc="97.5", autoattack_acc="61.25", name="IB-RAR", architecture="DigitsCNN")
    >>> e.robust_accuracy, e.clean_accuracy
    (0.6125, 0.975)
    >>> print(render_markdown([e]))
    ### digits, Linf (eps = 0.1)
    <BLANKLINE>
    | # | Model ID | Paper | Clean accuracy | Robust accuracy | n | Clean 95% CI | Robust 95% CI | Architecture | Venue |
    |:---:|---|---|:---:|:---:|:---:|:---:|:---:|:---:|:---:|
    | **1** | **ib_rar_digits** | *IB-RAR* | 97.50% | 61.25% | unknown | - | - | DigitsCNN | Unpublished |
    <BLANKLINE>
    n: number of evaluated examples (unknown: not recorded in the model-info file). 95% CI: Wilson score interval of the accuracy over n examples.
    >>> e.n = 80
    >>> print(render_markdown([e]).splitlines()[-3])
    | **1** | **ib_rar_digits** | *IB-RAR* | 97.50% | 61.25% | 80 | [91.3, 99.3] | [50.3, 71.2] | DigitsCNN | Unpublished |

The package: :mod:`~ib_plugins.leaderboard.entry` (one model-info file), :mod:`~ib_plugins.leaderboard.markdown_table`
and :mod:`~ib_plugins.leaderboard.html_page` (the two renderings) and :mod:`~ib_plugins.leaderboard.submission`
(RobustBench's issue text).
"""

from __future__ import annotations

from ib_plugins.leaderboard.entry import (
    MODEL_INFO_FIELDS,
    STANDARD_EPS,
    THREAT_MODELS,
    LeaderboardEntry,
    _eps_value,  # noqa: F401
    load_entries,
)
from ib_plugins.leaderboard.html_page import render_html, render_leaderboard
from ib_plugins.leaderboard.markdown_table import render_markdown
from ib_plugins.leaderboard.submission import robustbench_submission
from ib_plugins.stats import wilson_interval

__all__ = [
    "MODEL_INFO_FIELDS",
    "THREAT_MODELS",
    "STANDARD_EPS",
    "LeaderboardEntry",
    "wilson_interval",
    "load_entries",
    "render_markdown",
    "render_html",
    "render_leaderboard",
    "robustbench_submission",
]
