"""The audit report: :class:`AuditReport`, its verdict and its writers (markdown, JSON, HTML)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ib_plugins._markdown import md_cell, md_json, md_text
from ib_plugins.audit.checks import CHECK_KINDS, CheckResult, _pct

# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


@dataclass
class AuditReport:
    """The result of :func:`run_audit`.

    Attributes:
        checks: one :class:`CheckResult` per check, in :data:`CHECKS` order.
        numbers: every measured number (also in ``audit.json``).
        config: the audit's settings.
        out_dir: the report folder (None when nothing was written).
        files: name → path of the written files.

    Example:
        >>> r = AuditReport([CheckResult("large-eps", "warn", "x"), CheckResult("adaptive", "skip", "y")], {}, {})
        >>> r.verdict, r.warned
        ('warn', ['large-eps'])
        >>> AuditReport([CheckResult("adaptive", "warn", "x")], {}, {}).verdict
        'weak-attack'
    """

    checks: list[CheckResult]
    numbers: dict[str, Any]
    config: dict[str, Any]
    out_dir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"warn"`` if a masking indicator warns, ``"weak-attack"`` if only weak-attack checks warn, else ``"pass"``."""
        if self.masking_warnings:
            return "warn"
        return "weak-attack" if self.weak_attack_warnings else "pass"

    @property
    def warned(self) -> list[str]:
        """Names of the checks that warn (both kinds)."""
        return [c.name for c in self.checks if c.status == "warn"]

    @property
    def masking_warnings(self) -> list[str]:
        """Names of the masking-indicator checks that warn (see :data:`CHECK_KINDS`)."""
        return [n for n in self.warned if CHECK_KINDS.get(n, "masking") == "masking"]

    @property
    def weak_attack_warnings(self) -> list[str]:
        """Names of the weak-attack checks that warn (the attack, not the model; see :data:`CHECK_KINDS`)."""
        return [n for n in self.warned if CHECK_KINDS.get(n, "masking") == "weak-attack"]

    @property
    def robust_accuracy(self) -> float | None:
        """Worst-case accuracy over every attack the audit ran at the main ε (None before any ran).

        A sample counts as robust only when it is classified correctly without attack and after
        each of those attacks (the per-sample minimum, as AutoAttack reports it).
        """
        worst = self.numbers.get("worst_case") or {}
        return worst.get("accuracy")

    def __getitem__(self, name: str) -> CheckResult:
        """The check called ``name``.

        Raises:
            ValueError: no such check (the message lists them).
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise ValueError(f"name: expected one of {', '.join(repr(c.name) for c in self.checks)}, got {name!r}")

    def summary(self) -> str:
        """One line: the verdict and the counts.

        Returns:
            The summary text.

        Example:
            >>> AuditReport([CheckResult("large-eps", "pass", "x")], {}, {}).summary()
            'PASS: all 1 applicable checks pass (0 skipped); no sign of gradient masking found by these checks.'
            >>> print(AuditReport([CheckResult("large-eps", "pass", "x"), CheckResult("adaptive", "warn", "y")],
            ...                   {"worst_case": {"accuracy": 0.5, "eps": 0.1, "attacks": ["pgd", "fgsm"]}}, {}).summary())
            PASS on the 1 applicable masking check (0 skipped): no sign of gradient masking. Weak attack: adaptive (the defence-aware attack is weaker than plain PGD; a finding about the attack, not the model). Robust accuracy: 50.0% (worst case over 2 attacks at eps=0.1).
        """
        applicable = [c for c in self.checks if c.status != "skip"]
        skipped = len(self.checks) - len(applicable)
        weak = self.weak_attack_warnings
        weak_text = (
            f"Weak attack: {', '.join(weak)} (the defence-aware attack is weaker than plain PGD; a finding about the "
            "attack, not the model)." if weak else ""
        )
        worst = self.numbers.get("worst_case") or {}
        robust_text = (
            f"Robust accuracy: {_pct(worst['accuracy'])} (worst case over {len(worst.get('attacks', []))} attacks at "
            f"eps={worst.get('eps', '?'):g})." if worst.get("accuracy") is not None else ""
        )
        if not self.warned:
            head = (f"PASS: all {len(applicable)} applicable checks pass ({skipped} skipped); no sign of gradient "
                    "masking found by these checks.")
        elif not self.masking_warnings:
            n_mask = len([c for c in applicable if CHECK_KINDS.get(c.name, "masking") == "masking"])
            head = (f"PASS on the {n_mask} applicable masking check{'s' if n_mask != 1 else ''} ({skipped} skipped): "
                    f"no sign of gradient masking. {weak_text}")
        else:
            masking = self.masking_warnings
            head = (f"WARN: {len(masking)} of {len(applicable)} applicable checks warn ({', '.join(masking)}): signs of "
                    f"gradient masking; {skipped} skipped. The robustness may be overestimated; see below."
                    + (f" {weak_text}" if weak_text else ""))
        return " ".join(part for part in (head, robust_text) if part)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-serialisable data (the content of ``audit.json``).

        Returns:
            ``{"verdict", "summary", "checks", "numbers", "config"}``.

        Example:
            >>> AuditReport([], {}, {}).to_dict()["verdict"]
            'pass'
        """
        return {"verdict": self.verdict, "summary": self.summary(), "robust_accuracy": self.robust_accuracy,
                "masking_warnings": self.masking_warnings, "weak_attack_warnings": self.weak_attack_warnings,
                "checks": [c.to_dict() for c in self.checks], "numbers": self.numbers, "config": self.config}

    def _attack_rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for key, entry in (self.numbers.get("attacks") or {}).items():
            rows.append((key, str(entry.get("threat", "")), _pct(entry.get("accuracy")),
                         _pct(entry.get("success_rate")), f"{entry.get('seconds', 0.0):.1f}"))
        return rows

    def to_markdown(self) -> str:
        """The markdown report (summary and one line per check at the top, then the numbers).

        Returns:
            The text of ``audit.md``.

        Example:
            >>> report = AuditReport([CheckResult("large-eps", "pass", "ok")], {}, {"target": "m"})
            >>> print(report.to_markdown().splitlines()[0])
            # Gradient-masking audit: m
        """
        n = self.numbers
        lines = [f"# Gradient-masking audit: {md_text(self.config.get('target', 'model'))}", "",
                 f"**{md_text(self.summary())}**", ""]
        lines += [c.line() for c in self.checks]
        lines += ["", "Following Carlini et al. (2019), *On Evaluating Adversarial Robustness*. A WARN is a reason to "
                  "look closer, not a proof of masking; passing every check is no proof of robustness.", ""]
        if n:
            lines += ["## Setting", ""]
            mode = "quick" if self.config.get("quick") else "full"
            lines.append(f"- {n.get('n')} test images, clean accuracy {_pct(n.get('clean_accuracy'))}; main eps "
                         f"{n.get('eps')} (L-inf); seed {self.config.get('seed')}; mode {mode}.")
            if n.get("worst_case"):
                w = n["worst_case"]
                lines.append(f"- Robust accuracy at eps {w['eps']:g}: **{_pct(w['accuracy'])}**, the worst case per "
                             f"sample over the {len(w['attacks'])} attacks run at that eps "
                             f"({', '.join(md_text(a) for a in w['attacks'])}); the strongest single attack, "
                             f"{md_text(w['strongest_single'])}, leaves {_pct(w['strongest_single_accuracy'])}.")
            if not n.get("deterministic", True):
                lines.append(f"- The eval forward is **not deterministic**: every attack uses EOT over "
                             f"{n.get('eot_samples')} forwards, predictions average {n.get('eot_samples')} forwards.")
            if n.get("ib_config"):
                lines.append(f"- IB configuration used by pgd-ib: {md_json(n['ib_config'])}")
            if n.get("entropic_config"):
                lines.append(f"- Entropic configuration used by pgd-entropic: {md_json(n['entropic_config'])}")
            if n.get("surrogate"):
                s = n["surrogate"]
                lines.append(f"- Surrogate: {md_text(s.get('source'))}, "
                             f"clean accuracy {_pct(s.get('clean_accuracy'))}, "
                             f"its own PGD accuracy {_pct(s.get('pgd_accuracy'))}.")
            lines += ["", "## Attacks", "", "| attack | threat model | accuracy | success rate | time (s) |",
                      "|---|---|---|---|---|"]
            lines += [f"| {md_cell(a)} | {md_cell(b)} | {c} | {d} | {e} |" for a, b, c, d, e in self._attack_rows()]
            if "cw_comparison" in n:
                cw = n["cw_comparison"]
                lines += ["", f"CW: torchattacks' `CW` (margin with a 0 in the true-class slot, spec §2.7 item 11) "
                          f"reaches {_pct(cw.get('torchattacks_success'))} success, the corrected `cw-l2` "
                          f"{_pct(cw.get('corrected_success'))}."]
                if cw.get("note"):
                    lines += ["", "The model's outputs look like log-probabilities: torchattacks' CW margin is "
                              "identically 0 on them (spec §2.7 item 11)."]
            for key, title, xlabel in (("eps_curve", "Accuracy vs eps (PGD)", "eps"),
                                       ("steps_curve", "Accuracy vs PGD steps", "steps")):
                if key in n:
                    xs, accs = n[key][xlabel], n[key]["accuracy"]
                    lines += ["", f"## {title}", "", f"| {xlabel} | " + " | ".join(f"{x:g}" for x in xs) + " |",
                              "|---|" + "---|" * len(xs), "| accuracy | " + " | ".join(_pct(a) for a in accs) + " |"]
            for key in ("accuracy_vs_eps", "accuracy_vs_steps"):
                if key in self.files:
                    lines += ["", f"![{key}]({key}.png)"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """A self-contained HTML page (inline CSS, PNGs embedded as data URIs; no external resource).

        Returns:
            The text of ``audit.html``.

        Example:
            >>> page = AuditReport([CheckResult("large-eps", "warn", "acc 40%")], {}, {}).to_html()
            >>> "<html" in page and "http" not in page.replace("http-equiv", "")
            True
        """
        esc = html.escape
        colors = {"pass": "#1a7f37", "warn": "#b35900", "skip": "#6e7781", "weak-attack": "#8250df"}
        rows = "".join(
            f"<tr><td><b style='color:{colors[c.status]}'>{c.status.upper()}</b></td><td>{esc(c.title)}</td>"
            f"<td>{esc(c.message)}</td></tr>" for c in self.checks
        )
        attack_rows = "".join(f"<tr>{''.join(f'<td>{esc(v)}</td>' for v in r)}</tr>" for r in self._attack_rows())
        images = ""
        for key in ("accuracy_vs_eps", "accuracy_vs_steps"):
            path = self.files.get(key)
            if path and Path(path).is_file():
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                images += (f"<figure><img alt='{key}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{key}</figcaption></figure>")
        verdict_color = colors[self.verdict]
        numbers = esc(json.dumps(self.numbers, indent=2, sort_keys=True, default=str))
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Gradient-masking audit: {esc(str(self.config.get('target', 'model')))}</title><style>"
            "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#1f2328}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;padding:4px 8px;"
            "text-align:left;vertical-align:top}th{background:#f6f8fa}figure{display:inline-block;margin:0 1em 1em 0}"
            "pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:12px}</style></head><body>"
            f"<h1>Gradient-masking audit: {esc(str(self.config.get('target', 'model')))}</h1>"
            f"<p style='font-size:1.15em;color:{verdict_color}'><b>{esc(self.summary())}</b></p>"
            f"<table><tr><th>status</th><th>check</th><th>numbers</th></tr>{rows}</table>"
            "<p>Following Carlini et al. (2019), <i>On Evaluating Adversarial Robustness</i>. "
            "A WARN is a reason to look "
            "closer, not a proof of masking; passing every check is no proof of robustness.</p>"
            "<h2>Attacks</h2><table><tr><th>attack</th><th>threat model</th><th>accuracy</th><th>success rate</th>"
            f"<th>time (s)</th></tr>{attack_rows}</table>{images}"
            f"<h2>All numbers</h2><pre>{numbers}</pre></body></html>\n"
        )
