"""HTML reports: every kind renders from a real warehouse, offline and deterministic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inboxlab.cli import app
from inboxlab.report.html import KINDS, render
from inboxlab.report.redact import mask_email, mask_text
from inboxlab.warehouse import connect
from tests.unit.dashdata import LIVE_RECIPIENT, build_home

EXTERNAL = re.compile(r"<(?:script|link|img|iframe)[^>]+(?:src|href)\s*=\s*[\"']?(?:https?:)?//",
                      re.I)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_home(tmp_path_factory.mktemp("rep") / "home")


@pytest.mark.parametrize("kind", KINDS)
def test_report_is_self_contained(home: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / f"{kind}.html"
    result = CliRunner().invoke(app, ["report", kind, "--home", str(home), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert not EXTERNAL.search(text)
    assert "Plotly.newPlot" in text and "id=\"chart-1\"" in text
    assert text.count("<script") >= 2  # plotly.js inline + at least one chart
    assert LIVE_RECIPIENT not in text


def test_report_is_deterministic(home: Path) -> None:
    with connect(home) as con:
        assert render("weekly", con) == render("weekly", con)


def test_policy_report_limits_runs_and_ingests_sim_dirs(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.html"
    runner = CliRunner()
    result = runner.invoke(app, ["report", "policy", "live-1", "--home", str(home),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "live-1" in text and "gmail-brownout-1" not in text.split("Promotion status")[0]
    assert "canary" in text
    result = runner.invoke(app, ["report", "policy", str(home.parent / "home-sim"), "--home",
                                 str(home), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "gmail-brownout-1" in out.read_text()


def test_bad_input_is_one_line(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (["report", "monthly", "--home", str(home), "--out", str(tmp_path / "x.html")],
                 ["report", "policy", "no-such-run", "--home", str(home),
                  "--out", str(tmp_path / "x.html")],
                 ["report", "weekly", "--home", str(home), "--out", str(tmp_path / "x.txt")]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0
        assert "Traceback" not in result.output
    assert not (tmp_path / "x.html").exists()


def test_empty_warehouse_report_says_what_to_run(tmp_path: Path) -> None:
    with connect(tmp_path / "empty") as con:
        text = render("weekly", con)
    assert "inboxlab import postfix" in text and not EXTERNAL.search(text)


def test_masking() -> None:
    assert mask_email("jane.doe@Example.com") == "j***@example.com"
    assert mask_email("nobody") == "***"
    assert mask_text("550 <a.b@x.org> unknown; cc c@y.net") == "550 <a***@x.org> unknown; cc c***@y.net"
