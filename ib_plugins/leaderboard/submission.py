"""A RobustBench new-model issue text for an entry: :func:`robustbench_submission`."""

from __future__ import annotations

from ib_plugins._markdown import md_code, md_text, safe_url
from ib_plugins._types import PathLike
from ib_plugins.leaderboard.entry import LeaderboardEntry, _format_eps

# --------------------------------------------------------------------------------------------------
# RobustBench submission
# --------------------------------------------------------------------------------------------------

#: Where :func:`robustbench_submission`'s layout comes from.
_TEMPLATE_SOURCE = "RobustBench/robustbench, .github/ISSUE_TEMPLATE/new-model.md"
#: Test-set sizes of RobustBench's leaderboards (their evaluations use the whole test set).
_ROBUSTBENCH_N = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}


def _todo(what: str) -> str:
    return f"TODO: {what}"


def robustbench_submission(entry: LeaderboardEntry | PathLike) -> str:
    """The text of RobustBench's "New Model(s)" issue, filled from a model-info entry.

    The layout is RobustBench's issue template (``.github/ISSUE_TEMPLATE/new-model.md`` of
    RobustBench/robustbench): Paper Information (title, URL, authors), one Leaderboard Claim
    (architecture, threat model, eps, clean and robust accuracy, additional data, evaluation
    method, checkpoint and code) and the Model Zoo checkboxes, left unchecked. Fields the entry
    does not know read ``TODO: ...``. The robust accuracy is the AutoAttack accuracy (the claim
    RobustBench re-checks); a lower ``external`` accuracy (e.g. the worst case of
    ``ib-plugins audit``, see :func:`~ib_plugins.adapters.robustbench_eval.evaluate_for_leaderboard`)
    is given beside it with its source. A note on top, to delete before submitting, lists what
    would keep the claim from RobustBench's leaderboard: fewer examples than the full test set, a
    non-standard eps, a non-standard AutoAttack version, an entry marked unreliable, a dataset
    without a RobustBench leaderboard. Every field from the entry is escaped for markdown.

    Args:
        entry: a :class:`LeaderboardEntry` or the path of a model-info JSON file.

    Returns:
        The issue text (markdown).

    Raises:
        ValueError: the file breaks the model-info schema.
        FileNotFoundError: no such file.

    Example:
        >>> e = LeaderboardEntry(model_name="m", dataset="cifar10", threat_model="Linf", eps=8 / 255,
        ...                      clean_acc="91.2", autoattack_acc="60.1", architecture="WideResNet-28-10", n=10000)
        >>> text = robustbench_submission(e)
        >>> print("\\n".join(line for line in text.splitlines() if line.startswith(("- **eps", "- **Robust"))))
        - **eps**: 8/255
        - **Robust accuracy**: 60.1%
    """
    e = entry if isinstance(entry, LeaderboardEntry) else LeaderboardEntry.from_json(entry)
    ib = e.ib_plugins if isinstance(e.ib_plugins, dict) else {}
    aa = ib.get("autoattack") if isinstance(ib.get("autoattack"), dict) else {}
    external = ib.get("external") if isinstance(ib.get("external"), dict) else {}
    dataset = e.dataset.strip().lower().replace("-", "")
    threat = {"Linf": "Linf", "L2": "L2", "corruptions": "Common Corruptions",
              "corruptions_3d": "Common Corruptions (3D)"}.get(e.threat_model or "", None)
    corruptions = (e.threat_model or "").startswith("corruptions")

    # What would keep the claim off RobustBench's leaderboard.
    notes: list[str] = []
    full_n = _ROBUSTBENCH_N.get(dataset)
    if full_n is None:
        notes.append(f"RobustBench has no leaderboard for the dataset {md_text(e.dataset)} "
                     "(it has cifar10, cifar100 and imagenet).")
    elif e.n is None:
        notes.append(f"the number of evaluated examples is not recorded; RobustBench evaluates the first {full_n:,} "
                     "test points.")
    elif e.n < full_n:
        notes.append(f"evaluated on {e.n:,} examples; RobustBench evaluates the first {full_n:,} test points: rerun "
                     f"on all of them (ib-plugins: n_examples={full_n}) before claiming these accuracies.")
    if e.nonstandard_eps:
        notes.append(f"eps = {md_text(_format_eps(e.eps))} is not RobustBench's {_format_eps(e.standard_eps)} for "
                     f"{md_text(e.dataset)} {md_text(e.threat_model)}.")
    version = aa.get("version")
    if isinstance(version, str) and version != "standard":
        notes.append(f"AutoAttack version {md_text(version)}, not the standard version RobustBench requires.")
    if e.unreliable:
        reasons = ib.get("unreliable_reasons")
        why = f" ({md_text('; '.join(map(str, reasons)))})" if isinstance(reasons, list) and reasons else ""
        notes.append(f"the entry is marked potentially unreliable{why}: check the evaluation before submitting.")
    if e.threat_model is None:
        notes.append("the threat model is unknown: fill it in.")

    # Evaluation method.
    method_parts: list[str] = []
    if corruptions:
        method_parts.append("common corruptions")
    else:
        attacks = aa.get("attacks")
        attack_text = f" ({md_text(', '.join(map(str, attacks)))})" if isinstance(attacks, list) and attacks else ""
        kind = "standard AutoAttack" if version in (None, "standard") else f"AutoAttack {md_text(version)}"
        method_parts.append(f"{kind}{attack_text}")
    if e.n is not None:
        method_parts.append(f"on {e.n:,} test examples")
    if e.external is not None:
        source = external.get("source")
        method_parts.append(f"best known robust accuracy {md_text(e.external)}%"
                            + (f" from {md_text(source)}" if isinstance(source, str) and source else ""))
    producer = ib.get("version")
    if isinstance(producer, str):
        method_parts.append(f"evaluated with ib-plugins {md_text(producer)}")

    robust = e.robust_accuracy
    robust_text = _todo("the robust accuracy") if robust is None else f"{md_text(getattr(e, e.robust_field))}%"
    if e.external is not None and robust is not None and e.best_known_accuracy < robust:
        robust_text += f" (AutoAttack); best known {md_text(e.external)}% (external evaluation)"
    title = e.name if e.name and e.name != e.model_name else None
    url = safe_url(e.link)
    lines = [
        f"> Filled by ib-plugins from the model-info entry {md_code(e.model_name)}, in the layout of RobustBench's "
        f"issue template ({md_text(_TEMPLATE_SOURCE)}). Issue title: {md_code('[New Model] NameYearFirstWordOfTitle')}."
        " Fill in the TODO fields, check the boxes that apply and delete this note before submitting.",
    ]
    if notes:
        lines.append(">")
        lines.append("> Before submitting:")
        lines += [f"> - {note}" for note in notes]
    lines += [
        "",
        "# Paper Information",
        "",
        f"- **Paper Title**: {md_text(title) if title else _todo('the paper title')}",
        f"- **Paper URL**: {url if url else _todo('the paper URL')}",
        f"- **Paper authors**: {md_text(e.authors) if e.authors else _todo('the authors')}",
        "",
        "# Leaderboard Claim(s)",
        "",
        "## Model 1",
        "",
        f"- **Architecture**: {md_text(e.architecture) if e.architecture else _todo('the architecture')}",
        f"- **Threat Model**: {threat if threat else _todo('one of L2, Linf, Common Corruptions')}",
        f"- **eps**: {'N/A' if corruptions else (md_text(_format_eps(e.eps)) if e.eps is not None else _todo('eps'))}",
        f"- **Clean accuracy**: {md_text(e.clean_acc)}%",
        f"- **Robust accuracy**: {robust_text}",
        f"- **Additional data**: {'true' if e.additional_data else 'false' if e.additional_data is False else _todo('true/false')}",
        f"- **Evaluation method**: {', '.join(method_parts)}",
        "- **Checkpoint and code**: " + _todo(
            "the URL of the checkpoint and the code (to share the checkpoint privately instead, email "
            "`adversarial.benchmark@gmail.com`)"),
        "",
        "# Model Zoo:",
        "",
        "- [ ] I want to add my models to the Model Zoo (check if true)",
        "- [ ] I use an architecture that is **not** included among those "
        "[here](https://github.com/RobustBench/robustbench/tree/master/robustbench/model_zoo/architectures) "
        "(check if true).",
        "- [ ] I agree to release my model(s) under MIT license (check if true) **OR**",
        "- [ ] I want my models to be released under a custom license, located here: (custom license URL here)",
    ]
    return "\n".join(lines) + "\n"
