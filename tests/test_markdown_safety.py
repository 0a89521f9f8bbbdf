"""Every markdown writer escapes user-supplied fields: no HTML, no foreign links, no broken tables.

Each writer gets ``<script>``, ``|``, line breaks, markdown syntax and ``javascript:`` links in every
field a user can set (model, run, attack, class and layer names, titles, paths, links, metric
names) and its output must come out inert: no raw ``<script`` (nor any raw tag or autolink), no link
target other than ``http(s)`` (or the report's own PNGs), table rows with the header's column
count, and no line break inside a cell.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from ib_plugins import _markdown
from ib_plugins._markdown import md_cell, md_code, md_json, md_link, md_text, safe_url

# No "/" or "\" (model IDs are file names); the closing-tag variant goes where slashes are allowed.
EVIL = ("x | y\n\n<script>alert(1)<!-- -->\r\n# head\u2028- item [click](javascript:alert(1)) "
        "<javascript:alert(2)> <img src=x onerror=alert(3)> `tick` & *em* ![i](http:x) |")
EVIL_PATH = "runs/x | y\n<script>alert(1)</script>/[a](javascript:alert(1))"
EVIL_LINK = "javascript:alert(1)"
BEFORE_BREAK = "x \\| y"  # the escaped text before EVIL's first line break


def _unescaped_pipes(line: str) -> int:
    count, backslashes = 0, 0
    for char in line:
        if char == "\\":
            backslashes += 1
            continue
        if char == "|" and backslashes % 2 == 0:
            count += 1
        backslashes = 0
    return count


# "](" whose "]" is not backslash-escaped: the start of a link target.
_LINK_TARGET = re.compile(r"(?:^|[^\\])(?:\\\\)*\]\(\s*<?([^)\s>]*)", re.MULTILINE)


def assert_inert(md: str) -> None:
    """The properties every escaped markdown output must have."""
    lower = md.lower()
    assert "<script" not in lower, md
    assert not re.search(r"<[a-z!/?]", lower), md  # no raw tag, comment or autolink at all
    for target in _LINK_TARGET.findall(md):
        assert target.lower().startswith(("http://", "https://")) or re.fullmatch(r"[\w.-]+\.png", target), target
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].startswith("|"):
            block.append(lines[i])
            i += 1
        assert len(block) >= 2 and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", block[1]), block
        columns = _unescaped_pipes(block[0])
        for row in block:
            assert _unescaped_pipes(row) == columns and row.rstrip().endswith("|"), (row, block[0])
    # a line break in a field would put the text after it on a line of its own
    for line in lines:
        if "alert(1)" in line:
            assert any(part in line for part in (BEFORE_BREAK, "x \\u007c y", "runs")), line
        assert not re.match(r"\s*(# head|- item|&lt;(script|img|!--))", line), line  # no block opened by a field


# --------------------------------------------------------------------------------------------------
# The helpers
# --------------------------------------------------------------------------------------------------


def test_helpers_escape_and_keep_ordinary_text():
    assert md_cell("digits_cnn_ce-1.0 (IB-RAR), 8/255: 45.5%") == "digits_cnn_ce-1.0 (IB-RAR), 8/255: 45.5%"
    assert md_cell("a|b") == "a\\|b" and md_cell("a\\|b") == "a\\\\\\|b"
    assert md_cell("l1\nl2\r\nl3\u2028l4\x00") == "l1 l2 l3 l4"
    assert md_cell("<b>&amp;</b>") == "&lt;b&gt;&amp;amp;&lt;/b&gt;"
    assert md_cell("[t](javascript:x) `c` *e*") == "\\[t\\](javascript:x) \\`c\\` \\*e\\*"
    assert md_cell("-") == "-" and md_text("-") == "\\-" and md_text("- a") == "\\- a"
    assert md_text("## h") == "\\## h" and md_text("3) x") == "3\\) x" and md_text("---") == "\\---"
    assert md_text("#hashtag") == "#hashtag" and md_text("2024 results") == "2024 results"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.org/p?a=1&b=2#f", "https://example.org/p?a=1&b=2#f"),
        ("HTTP://EXAMPLE.ORG", "HTTP://EXAMPLE.ORG"),
        ("https://example.org/a b", None),
        ("https://example.org/x)](javascript:alert(1)", "https://example.org/x%29%5D%28javascript:alert%281%29"),
        ("https://example.org/|<x>", "https://example.org/%7C%3Cx%3E"),
        ("javascript:alert(1)", None),
        (" JaVaScRiPt:alert(1)", None),
        ("data:text/html,<script>alert(1)</script>", None),
        ("vbscript:x", None),
        ("file:///etc/passwd", None),
        ("//evil.example/x", None),
        ("https:evil", None),
        ("https://", None),
        ("https://ok.example/\nline", None),
        (None, None),
        (3, None),
    ],
)
def test_only_http_links_survive(url, expected):
    assert safe_url(url) == expected
    link = md_link("paper", url)
    assert link == ("paper" if expected is None else f"[paper]({expected})")


def test_code_and_json_spans():
    assert md_code("ibrar-code") == "`ibrar-code`" and md_code("a`b") == "a\\`b" and md_code("<x>") == "&lt;x&gt;"
    span = md_json({"layers": ["fc|1", "<script>"], "alpha": 0.5})
    assert span.startswith("`") and span.endswith("`") and span.count("`") == 2
    assert "<" not in span and "|" not in span
    import json

    assert json.loads(span[1:-1]) == {"layers": ["fc|1", "<script>"], "alpha": 0.5}
    assert _markdown.__all__ == ["md_cell", "md_text", "md_link", "md_code", "md_json", "safe_url"]


# --------------------------------------------------------------------------------------------------
# The writers
# --------------------------------------------------------------------------------------------------


def test_leaderboard_markdown_and_html(tmp_path):
    from ib_plugins.leaderboard import LeaderboardEntry, render_html, render_leaderboard, render_markdown

    entries = [
        LeaderboardEntry(model_name=EVIL, dataset=EVIL, threat_model=EVIL, clean_acc="90", autoattack_acc="50",
                         name=EVIL, link=EVIL_LINK, architecture=EVIL, venue=EVIL, footnote=EVIL, n=20),
        LeaderboardEntry(model_name="plain", dataset="cifar10", threat_model="Linf", clean_acc="80",
                         autoattack_acc="40", name=EVIL, link="https://example.org/p)[x](javascript:alert(1)"),
    ]
    md = render_markdown(entries, title=EVIL)
    assert_inert(md)
    assert "*[" + md_cell(EVIL) + "](https://example.org/p%29%5Bx%5D%28javascript:alert%281%29)*" in md
    md_path, html_path = render_leaderboard(entries, tmp_path, title=EVIL)
    assert_inert(md_path.read_text(encoding="utf-8"))
    page = render_html(entries, title=EVIL)
    assert html_path.read_bytes().decode("utf-8") == page
    # the HTML writer was safe already: the evil text is text, the only script the page's own
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags: list[str] = []
            self.urls: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.urls += [v or "" for k, v in attrs if k in ("href", "src", "action")]

    parser = Tags()
    parser.feed(page)
    assert parser.tags.count("script") == 1 and "img" not in parser.tags
    assert all(url.startswith(("https://", "data:")) for url in parser.urls), parser.urls
    assert "&lt;script&gt;alert(1)" in page


def test_audit_markdown():
    from ib_plugins.audit import AuditReport, CheckResult

    report = AuditReport(
        [CheckResult("large-eps", "warn", EVIL), CheckResult(EVIL, "warn", EVIL),
         CheckResult("transfer", "skip", EVIL)],
        {
            "n": 10, "clean_accuracy": 0.9, "eps": 0.1, "deterministic": True,
            "ib_config": {"layers": [EVIL, "fc`|`"], "alpha": 0.1}, "entropic_config": {"note": EVIL},
            "surrogate": {"source": EVIL_PATH, "clean_accuracy": 0.5, "pgd_accuracy": 0.1},
            "attacks": {EVIL: {"threat": EVIL, "accuracy": 0.4, "success_rate": 0.6, "seconds": 1.0}},
        },
        {"target": EVIL_PATH, "seed": 0},
        files={"accuracy_vs_eps": "accuracy_vs_eps.png"},
    )
    md = report.to_markdown()
    assert_inert(md)
    assert "](accuracy_vs_eps.png)" in md  # the report's own image links stay


def test_suite_compare_and_tendency_markdown():
    from ib_plugins.evaluation import AttackResult, AttackSpec, SuiteResult, compare_markdown, tendency_markdown

    spec = AttackSpec(EVIL, "linf", 0.03, {}, attack="FGSM")
    # an unbounded attack gets a footnote line that starts with its name
    unbounded = AttackSpec("# head " + EVIL, "l2", None, {"c": 0.1, "steps": 2, "lr": 0.1}, attack="CW")
    res = SuiteResult(n=4, n_clean_correct=4, attacks=[AttackResult(spec, 4, 1, 4, 3, 0.0, 0.03, 0.1),
                                                       AttackResult(unbounded, 4, 0, 4, 4, 0.0, 0.5, 0.3, 0.2)])
    assert_inert(res.to_markdown())
    table = compare_markdown({EVIL: res, "plain": res})
    assert_inert(table)
    assert not re.search(r"^\s*#", table, re.MULTILINE)  # the footnote does not turn into a heading
    table = tendency_markdown(torch.tensor([[0, 2], [1, 0]]), class_names=[EVIL, "dog"])
    assert_inert(table)
    assert table.splitlines()[2].endswith("| dog |") and table.splitlines()[3].endswith(f"| {md_cell(EVIL)} |")


def test_trainer_summary_markdown(tmp_path):
    from ib_plugins.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(epochs=1, train_limit=50, test_limit=20), out_dir=tmp_path / "run", progress=False)
    trainer.config = dataclasses.replace(trainer.config, method=EVIL, dataset=EVIL, model=EVIL, preset=EVIL, mask=EVIL,
                                         ib=True)
    md = trainer.summary_markdown({EVIL: EVIL, "test_acc": 0.5, "epochs": 1})
    assert_inert(md)
    assert "| test_acc | 0.5000 |" in md and "| epochs | 1 |" in md


# -- results.md of evaluate / select-layers / demo, with fast stand-ins for training -----------------


class _FakeTrainer:
    """Stands in for Trainer in the experiment runners: no training, a fixed untrained network."""

    def __init__(self, cfg, *, out_dir, resume, overwrite, progress, callbacks=None):
        self.cfg = cfg

    def fit(self):
        return {"epochs": 1}

    def eval_model(self):
        from ib_plugins.models import DigitsCNN

        torch.manual_seed(0)
        return DigitsCNN(num_classes=10).eval()


def _evil_suite(monkeypatch, keep: str = "fgsm"):
    """Make build_suite return only ``keep``, renamed to EVIL (an attack name as a user might choose)."""
    from ib_plugins import evaluation

    real = evaluation.build_suite

    def build_suite(*args, **kwargs):
        specs = [s for s in real(*args, **kwargs) if s.name == keep] or [
            s for s in real(*args, **{**kwargs, "attacks": [keep]})
        ]
        return [dataclasses.replace(s, name=EVIL) for s in specs]

    monkeypatch.setattr(evaluation, "build_suite", build_suite)


def test_evaluate_results_md(tmp_path, monkeypatch):
    pytest.importorskip("sklearn", reason="scikit-learn ships the digits data set")
    pytest.importorskip("torchattacks", reason="torchattacks runs the attack suite")
    from ib_plugins import experiments
    from ib_plugins.models import DigitsCNN
    from ib_plugins.training import TrainConfig

    torch.manual_seed(0)
    cfg = dataclasses.replace(TrainConfig(), model=EVIL)
    monkeypatch.setattr(experiments.evaluate, "load_model_from_checkpoint",
                        lambda *a, **k: (DigitsCNN(num_classes=10).eval(), cfg, {"epoch": 1}))
    _evil_suite(monkeypatch)
    out = tmp_path / "eval"
    experiments.evaluate_checkpoint(tmp_path / "checkpoint.pt", out_dir=out, attacks=["fgsm"], n=10, tendency=EVIL,
                                    progress=False)
    md = (out / "results.md").read_text()
    assert_inert(md)
    assert md.startswith("# ibrar suite") and "## Misclassification tendency under x \\| y" in md


def test_select_layers_results_md(tmp_path, monkeypatch):
    pytest.importorskip("sklearn", reason="scikit-learn ships the digits data set")
    pytest.importorskip("torchattacks", reason="torchattacks runs PGD")
    from ib_plugins import experiments

    monkeypatch.setattr(experiments.runs, "Trainer", _FakeTrainer)
    out = tmp_path / "select"
    experiments.select_robust_layers(candidates=[EVIL, "fc1"], epochs=1, eval_n=10, out_dir=out,
                                     progress=False)
    md = (out / "results.md").read_text()
    assert_inert(md)
    assert "| layer-x \\| y &lt;script&gt;" in md  # the run named after the layer, escaped, in its own row


def test_demo_results_md(tmp_path, monkeypatch):
    pytest.importorskip("sklearn", reason="scikit-learn ships the digits data set")
    pytest.importorskip("torchattacks", reason="torchattacks runs the attack suite")
    from ib_plugins import experiments

    monkeypatch.setattr(experiments.runs, "Trainer", _FakeTrainer)
    _evil_suite(monkeypatch)
    out = tmp_path / "demo"
    metrics = experiments.run_demo(out_dir=out, epochs=1, eval_n=10, autoattack_n=0, progress=False)
    md = (out / "results.md").read_text()
    assert_inert(md)
    assert_inert(metrics["table"])
    assert "| Model | Clean | x \\| y" in md


def test_report_command_table(tmp_path, capsys):
    import json

    from ib_plugins.cli import main
    from ib_plugins.evaluation import AttackResult, AttackSpec, SuiteResult

    folder = tmp_path / "run | <script>alert(1)<script>"
    folder.mkdir()
    spec = AttackSpec(EVIL, "linf", 0.03, {}, attack="FGSM")
    suite = SuiteResult(n=4, n_clean_correct=2, attacks=[AttackResult(spec, 4, 1, 2, 1, 0.0, 0.03, 0.1)])
    (folder / "metrics.json").write_text(json.dumps({"suite": suite.to_dict()}))
    table_file = tmp_path / "table.md"
    assert main(["report", str(folder), "--out", str(table_file)]) == 0
    table = table_file.read_text()
    assert_inert(table.replace(str(tmp_path), "runs"))
    assert "run \\| &lt;script&gt;" in table
    capsys.readouterr()
