"""ib_plugins.leaderboard: model-info schema, markdown/HTML rendering, loading, and a headless-browser check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ib_plugins.leaderboard import (
    MODEL_INFO_FIELDS,
    LeaderboardEntry,
    load_entries,
    render_html,
    render_leaderboard,
    render_markdown,
    wilson_interval,
)

# A curated RobustBench file (model_info/cifar10/Linf/Kang2021Stable.json, abridged footnote).
CURATED = {
    "link": "https://arxiv.org/abs/2110.12976",
    "name": "Stable Neural ODE with Lyapunov-Stable Equilibrium Points for Defending Against Adversarial Attacks",
    "authors": "Qiyu Kang, Yang Song, Qinxu Ding, Wee Peng Tay",
    "additional_data": True,
    "number_forward_passes": 1,
    "dataset": "cifar10",
    "venue": "NeurIPS 2021",
    "architecture": "WideResNet-70-16, Neural ODE block",
    "eps": "8/255",
    "clean_acc": "93.73",
    "reported": "71.28",
    "autoattack_acc": "71.28",
    "external": "64.20",
    "footnote": "64.20% robust accuracy is due to AutoAttack plus transfer APGD",
    "unreliable": True,
}
# What robustbench 1.1.1's update_json writes (all ModelInfo fields, nulls included).
UPDATE_JSON = {name: None for name in MODEL_INFO_FIELDS} | {
    "dataset": "cifar10",
    "eps": 0.03137254901960784,
    "clean_acc": "100.0",
    "autoattack_acc": "50.0",
}


def _entry(model_id: str, clean: str, robust: str, **kw) -> LeaderboardEntry:
    return LeaderboardEntry(model_name=model_id, dataset=kw.pop("dataset", "cifar10"), threat_model=kw.pop("threat_model", "Linf"),
                            clean_acc=clean, autoattack_acc=robust, eps=kw.pop("eps", 8 / 255), **kw)


def _write(root: Path, name: str, data: dict, threat: str = "Linf") -> Path:
    path = root / "model_info" / "cifar10" / threat / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


def test_reads_curated_and_update_json_files(tmp_path):
    curated = LeaderboardEntry.from_json(_write(tmp_path, "Kang2021Stable", CURATED))
    assert curated.model_name == "Kang2021Stable" and curated.threat_model == "Linf"
    assert curated.eps_value == pytest.approx(8 / 255) and curated.unreliable is True
    assert curated.robust_accuracy == pytest.approx(0.7128) and curated.best_known_accuracy == pytest.approx(0.642)
    written = LeaderboardEntry.from_json(_write(tmp_path, "Mine", UPDATE_JSON, threat="L2"))
    assert written.threat_model == "L2" and written.unreliable is False and written.link is None
    assert written.clean_accuracy == 1.0 and written.robust_accuracy == 0.5


def test_round_trip_keeps_schema_and_unknown_keys(tmp_path):
    data = CURATED | {"custom_key": [1, 2]}
    entry = LeaderboardEntry.from_json(_write(tmp_path, "K", data))
    out = entry.to_dict()
    assert list(out)[: len(MODEL_INFO_FIELDS)] == list(MODEL_INFO_FIELDS)
    assert out["custom_key"] == [1, 2] and out["external"] == "64.20" and out["eps"] == "8/255"
    again = tmp_path / "again" / "K.json"
    entry.to_json(again)
    assert LeaderboardEntry.from_json(again) == LeaderboardEntry.from_dict(json.loads(entry.to_json()), model_name="K")
    assert entry.path == again


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"clean_acc": None}, "clean_acc"),
        ({"clean_acc": "abc"}, "clean_acc"),
        ({"clean_acc": "120"}, "clean_acc"),
        ({"autoattack_acc": "12%"}, "autoattack_acc"),
        ({"autoattack_acc": None, "external": None}, "autoattack_acc"),
        ({"additional_data": "yes"}, "additional_data"),
        ({"number_forward_passes": 0}, "number_forward_passes"),
        ({"eps": "eight"}, "eps"),
        ({"eps": -1}, "eps"),
        ({"link": 3}, "link"),
        ({"unreliable": "no"}, "unreliable"),
        ({"dataset": None}, "dataset"),
        ({"ib_plugins": [1]}, "ib_plugins"),
        ({"external": "x"}, "external"),
        ({"n": 0}, "n"),
        ({"n": "100"}, "n"),
        ({"n": True}, "n"),
    ],
)
def test_schema_errors_name_the_field(tmp_path, change, field):
    data = {k: v for k, v in (CURATED | change).items()}
    path = _write(tmp_path, "broken", data)
    with pytest.raises(ValueError, match=rf"broken\.json: field '{field}'"):
        LeaderboardEntry.from_json(path)


@pytest.mark.parametrize("reported", ["abc", "56.3%", "", float("nan"), float("inf"), -5, 150, True, [], {"v": 1}])
def test_reported_must_be_a_percentage(tmp_path, reported):
    """Issue 11, item 2: 'reported' was stored as str(anything) ("nan", "[]", ...) and surfaced later."""
    with pytest.raises(ValueError, match=r"field 'reported': expected a percentage"):
        LeaderboardEntry.from_dict(CURATED | {"reported": reported}, model_name="m")
    path = tmp_path / "model_info" / "cifar10" / "Linf" / "m.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(CURATED | {"reported": reported}, allow_nan=True))
    with pytest.raises(ValueError, match=r"m\.json: field 'reported'"):
        load_entries(tmp_path)


@pytest.mark.parametrize(
    ("reported", "stored"), [("71.28", "71.28"), (71.28, "71.28"), (0, "0"), (" 100 ", "100"), (None, None)]
)
def test_reported_percentages_are_kept(reported, stored):
    assert LeaderboardEntry.from_dict(CURATED | {"reported": reported}, model_name="m").reported == stored


def test_loader_names_non_utf8_files_and_bad_paths(tmp_path):
    bad = tmp_path / "model_info" / "cifar10" / "Linf" / "bin.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'{"dataset": "\xff"}')
    with pytest.raises(ValueError, match=r"bin\.json: not a UTF-8 JSON file"):
        load_entries(bad)
    with pytest.raises(ValueError, match=r"bin\.json: not a UTF-8 JSON file"):
        load_entries(tmp_path)  # a folder scan reports it too, naming the file
    with pytest.raises(TypeError, match=r"paths: expected a path or an iterable of paths, got int"):
        load_entries(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"paths: expected str or os.PathLike items, got NoneType"):
        load_entries([None])  # type: ignore[list-item]


def test_missing_fields_and_non_objects(tmp_path):
    data = dict(CURATED)
    del data["clean_acc"]
    with pytest.raises(ValueError, match=r"field 'clean_acc': missing"):
        LeaderboardEntry.from_json(_write(tmp_path, "a", data))
    with pytest.raises(ValueError, match=r"expected a JSON object"):
        LeaderboardEntry.from_json(_write(tmp_path, "b", [1, 2]))  # type: ignore[arg-type]
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"c\.json: not a JSON file"):
        LeaderboardEntry.from_json(bad)
    with pytest.raises(ValueError, match=r"model_name: expected a file name"):
        _entry("a/b", "90", "50")


def test_load_entries_files_and_folders(tmp_path):
    a = _write(tmp_path, "A", CURATED)
    _write(tmp_path, "B", UPDATE_JSON, threat="L2")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "chunk_000000.json").write_text(json.dumps({"chunk": 0, "robust": [1], "fingerprint": "x"}))
    entries = load_entries([tmp_path, a])  # the file is read once
    assert sorted((e.model_name, e.threat_model) for e in entries) == [("A", "Linf"), ("B", "L2")]
    assert [e.model_name for e in load_entries(a)] == ["A"]
    _write(tmp_path, "C", CURATED | {"clean_acc": "x"})
    with pytest.raises(ValueError, match=r"C\.json: field 'clean_acc'"):
        load_entries(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_entries(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _entries() -> list[LeaderboardEntry]:
    return [
        _entry("low", "95.0", "10.0", name="Low | pipe", venue="ICML 2020"),
        _entry("high", "80.0", "55.5", name="High", link="https://example.org/high", architecture="WRN-28-10",
               additional_data=True, footnote="Uses <extra> data"),
        _entry("mid", "85.0", "40.0", external="30.0", unreliable=True),
        _entry("l2", "90.0", "70.0", threat_model="L2", eps=0.5),
    ]


def test_markdown_layout_and_order():
    text = render_markdown(_entries(), title="My board")
    lines = text.splitlines()
    assert lines[0] == "# My board"
    header = ("| # | Model ID | Paper | Clean accuracy | Robust accuracy | n | Clean 95% CI | Robust 95% CI | "
              "Architecture | Venue |")
    assert lines.count(header) == 2  # one table per threat model
    linf = text.split("### cifar10, Linf")[1]
    rows = [line for line in linf.splitlines() if line.startswith("| **")]
    assert [re.search(r"\| \*\*\d+\*\* \| \*\*(\w+)\*\*", r).group(1) for r in rows] == ["high", "mid", "low"]
    assert rows[0] == ("| **1** | **high** | *[High](https://example.org/high)* | 80.00% | 55.50% | unknown | - | - | "
                       "WRN-28-10 | Unpublished |")
    assert "30.00%" in rows[1]  # best known (external) like RobustBench
    assert "*Low \\| pipe*" in rows[2] and "ICML 2020" in rows[2]
    assert "### cifar10, L2 (eps = 0.5)" in text and "### cifar10, Linf (eps = 8/255)" in text


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.rows: list[str] = []
        self.external: list[str] = []
        self._in_th = False
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "th":
            self._in_th, self._text = True, []
        if tag == "tr" and "data-model" in a:
            self.rows.append(a["data-model"])
        for key in ("src", "href"):
            value = a.get(key)
            if value and not value.startswith(("data:", "https://example.org")):
                self.external.append(value)

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False
            self.headers.append(" ".join("".join(self._text).split()))

    def handle_data(self, data):
        if self._in_th:
            self._text.append(data)


def test_html_layout_order_and_escaping():
    page = render_html(_entries(), title="Board <1>")
    parser = _TableParser()
    parser.feed(page)
    assert parser.headers[:9] == [
        "Rank", "Method", "Standard accuracy", "AutoAttack robust accuracy", "Best known robust accuracy",
        "AA eval. potentially unreliable", "Extra data", "Architecture", "Venue",
    ]
    assert parser.rows == ["l2", "high", "mid", "low"]  # L2 table first (sorted groups), then Linf by robust acc
    assert parser.external == []  # no external resources
    assert "<title>Board &lt;1&gt;</title>" in page and "Uses &lt;extra&gt; data" in page
    assert "&#9745;" in page and "Unreliable" in page
    assert "<script src" not in page and "<link rel=\"stylesheet\"" not in page


def test_render_leaderboard_writes_both(tmp_path):
    for e in _entries():
        e.to_json(e.model_info_path(tmp_path))
    md, page = render_leaderboard([tmp_path], tmp_path / "out", title="T")
    assert md == tmp_path / "out" / "leaderboard.md" and page == tmp_path / "out" / "leaderboard.html"
    assert "| **1** | **high** |" in md.read_text()
    assert page.read_text().startswith("<!DOCTYPE html>")


# --------------------------------------------------------------------------------------------------
# n, intervals and mixed-table notes
# --------------------------------------------------------------------------------------------------


def test_wilson_interval_values_and_errors():
    # closed forms: k = 0 gives [0, z^2 / (n + z^2)], k = n gives [n / (n + z^2), 1]
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2)), 1.0)
    low, high = wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.40383, abs=1e-5), pytest.approx(0.59617, abs=1e-5))
    assert wilson_interval(50, 100, confidence=0.99)[0] < low  # wider at a higher level
    # the intervals narrow with n: 2 images of difference out of 20 vs out of 100
    small, large = wilson_interval(2, 20), wilson_interval(10, 100)
    assert small[1] - small[0] > large[1] - large[0]
    for args, match in [((1, 0), r"n: expected an int >= 1, got 0"),
                        ((11, 10), r"successes: expected an int in \[0, 10\]"),
                        ((1.5, 10), r"successes: expected an int"),
                        ((1, 10, 1.0), r"confidence: expected a number in \(0, 1\)")]:
        with pytest.raises(ValueError, match=match):
            wilson_interval(*args[:2], **({"confidence": args[2]} if len(args) == 3 else {}))


def test_n_is_recorded_and_old_files_load_with_n_unknown(tmp_path):
    curated = LeaderboardEntry.from_json(_write(tmp_path, "Kang2021Stable", CURATED))
    assert curated.n is None and "n" not in curated.to_dict()
    older = LeaderboardEntry.from_json(_write(tmp_path, "Older", UPDATE_JSON | {"ib_plugins": {"n_examples": 64}}))
    assert older.n == 64  # files of earlier ib_plugins versions hold it under ib_plugins
    entry = _entry("m", "90", "50", n=20)
    data = entry.to_dict()
    assert data["n"] == 20 and "n" not in entry.extra
    assert LeaderboardEntry.from_dict(json.loads(entry.to_json()), model_name="m", threat_model="Linf") == entry


def _md_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| **"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[1].strip("*")] = cells
    return rows


def test_n_and_intervals_in_markdown_and_html():
    entries = [_entry("small", "95.0", "60.0", n=20), _entry("large", "90.0", "58.0", n=20),
               _entry("old", "90.0", "50.0")]
    text = render_markdown(entries)
    header = [c.strip() for c in text.splitlines()[2].strip("|").split(" | ")]
    assert header == ["#", "Model ID", "Paper", "Clean accuracy", "Robust accuracy", "n", "Clean 95% CI",
                      "Robust 95% CI", "Architecture", "Venue"]
    rows = _md_rows(text)
    low, high = wilson_interval(12, 20)  # 60% of 20
    assert rows["small"][5] == "20" and rows["small"][7] == f"[{100 * low:.1f}, {100 * high:.1f}]" == "[38.7, 78.1]"
    assert rows["small"][6] == "[76.4, 99.1]"  # 19 / 20
    assert rows["old"][5:8] == ["unknown", "-", "-"]  # a RobustBench-style file without n
    assert "Wilson score interval" in text and "n: number of evaluated examples" in text

    page = render_html(entries)
    parser = _TableParser()
    parser.feed(page)
    assert parser.headers[-1] == "Evaluated examples (n)"
    assert '<td class="ntd" data-value="20">20</td>' in page and '<td class="ntd" data-value="">unknown</td>' in page
    assert '<span class="ci" title="95% Wilson score interval over n = 20">[38.7, 78.1]</span>' in page
    assert '<span class="ci" title="95% Wilson score interval over n = 20">[76.4, 99.1]</span>' in page
    assert "Wilson score intervals" in page


def test_mixed_tables_carry_a_visible_note():
    same = [_entry("a", "90", "50", n=100), _entry("b", "80", "40", n=100)]
    assert "**Note:**" not in render_markdown(same) and "Note:" not in render_html(same)

    mixed_n = [_entry("a20", "90", "52", n=20), _entry("b100", "90", "50", n=100), _entry("old", "90", "45")]
    text = render_markdown(mixed_n)
    assert ("**Note:** this table mixes evaluations on different numbers of examples (n = 20, 100, unknown)"
            in text)
    assert "mixes evaluations on different numbers of examples (n = 20, 100, unknown)" in render_html(mixed_n)

    mixed_eps = [_entry("a", "90", "50", n=100), _entry("b", "90", "40", n=100, eps="4/255")]
    text = render_markdown(mixed_eps)
    assert "**Note:** this table mixes radii (eps = 4/255, 8/255)" in text
    assert "numbers of examples" not in text
    assert "this table mixes radii (eps = 4/255, 8/255)" in render_html(mixed_eps)
    # the same radius written two ways is not a mix
    assert "mixes radii" not in render_markdown([_entry("a", "90", "50"), _entry("b", "90", "40", eps="8/255")])

    mixed_groups = [_entry("a", "90", "50"), _entry("b", "90", "40", threat_model="L2", eps=0.5),
                    _entry("c", "90", "40", dataset="cifar100")]
    text = render_markdown(mixed_groups, title="T")
    note = ("**Note:** this leaderboard mixes datasets (cifar10, cifar100) and threat models (L2, Linf); entries are "
            "ranked within each table only")
    assert text.splitlines()[2].startswith(note)
    page = render_html(mixed_groups)
    assert "this leaderboard mixes datasets (cifar10, cifar100) and threat models (L2, Linf)" in page
    assert page.index("this leaderboard mixes") < page.index("<section>")
    assert 'class="note warning" role="note"' in page


# --------------------------------------------------------------------------------------------------
# Headless Chromium: no console errors, working sort, screenshot
# --------------------------------------------------------------------------------------------------

_CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]


def _chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("chromium not installed: /usr/bin/chromium and `chromium` on PATH are missing (apt-get install chromium)")


def _run_chromium(binary: str, tmp_path: Path, url: str, *extra: str) -> tuple[str, list[str]]:
    proc = subprocess.run(
        [binary, *_CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, url],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Console messages look like `[pid:tid:time:INFO:CONSOLE:12] "Uncaught ...", source: file:///... (12)`.
    console = [line for line in proc.stderr.splitlines()
               if re.search(r":CONSOLE[:(]", line) or "Uncaught" in line or "Refused to" in line]
    return proc.stdout, console


def test_html_opens_in_chromium_without_console_errors(tmp_path):
    binary = _chromium()
    page = tmp_path / "leaderboard.html"
    page.write_text(render_html(_entries()), encoding="utf-8")

    # the error detection itself works: a page with a JS error is caught
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                      "<script>undefinedFunction();</script></body></html>")
    _, console = _run_chromium(binary, tmp_path, broken.as_uri(), "--dump-dom")
    assert any("Uncaught ReferenceError" in line for line in console), console

    dom, console = _run_chromium(binary, tmp_path, page.as_uri(), "--dump-dom")
    assert console == []
    assert re.findall(r'data-model="(\w+)"', dom) == ["l2", "high", "mid", "low"]
    assert 'aria-sort="descending"' in dom  # the script ran (default sort on the best-known column)

    # the script sorts: the URL fragment picks the initial order (clean accuracy ascending)
    dom, console = _run_chromium(binary, tmp_path, page.as_uri() + "#sort=clean-asc", "--dump-dom")
    assert console == []
    assert re.findall(r'data-model="(\w+)"', dom) == ["l2", "high", "mid", "low"]
    linf = dom.split("cifar10_leaderboard_Linf")[1]
    assert re.findall(r'data-model="(\w+)"', linf) == ["high", "mid", "low"]  # 80 < 85 < 95
    dom, _ = _run_chromium(binary, tmp_path, page.as_uri() + "#sort=method-desc", "--dump-dom")
    linf = dom.split("cifar10_leaderboard_Linf")[1]
    assert re.findall(r'data-model="(\w+)"', linf) == ["mid", "low", "high"]  # "mid" > "low | pipe" > "high"
    assert re.search(r'data-key="method"[^>]*aria-sort="descending"', linf)

    # the n column sorts numerically, an unknown n last when descending
    counted = tmp_path / "counted.html"
    counted.write_text(render_html([_entry("high", "80", "55", n=50), _entry("mid", "85", "40", n=200),
                                    _entry("low", "95", "10")]), encoding="utf-8")
    dom, console = _run_chromium(binary, tmp_path, counted.as_uri() + "#sort=n-desc", "--dump-dom")
    assert console == []
    assert re.findall(r'data-model="(\w+)"', dom) == ["mid", "high", "low"]
    assert re.search(r'data-key="n"[^>]*aria-sort="descending"', dom)

    shot = tmp_path / "leaderboard.png"
    _, console = _run_chromium(binary, tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,900")
    assert console == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
