"""Every dashboard page through Streamlit's AppTest, on a real warehouse and on an empty one."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from inboxlab.commands.dash import app_path, command
from tests.unit.dashdata import LIVE_RECIPIENT, build_home

# page slug -> minimum charts with the fixture warehouse
PAGES = {"status": 3, "warmup": 3, "latency": 2, "deferrals": 1, "reputation": 1,
         "dead-letters": 1, "sim": 1, "sim-vs-live": 2, "policy": 2}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_home(tmp_path_factory.mktemp("dash") / "home")


def _run(home: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("INBOXLAB_HOME", str(home))
    at = AppTest.from_file(str(app_path()), default_timeout=60)
    at.query_params["page"] = page
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.code]
    parts += [i.value for i in at.info] + [w.value for w in at.warning]
    parts += [df.value.to_csv() for df in at.dataframe]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", list(PAGES))
def test_page_with_data(home: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(home, page, monkeypatch)
    assert at.sidebar.radio[0].value == page
    assert len(at.get("plotly_chart")) >= PAGES[page]
    assert at.dataframe, "each page shows its numbers as a table too"


@pytest.mark.parametrize("page", list(PAGES))
def test_empty_state_names_the_command(tmp_path: Path, page: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(tmp_path / "empty", page, monkeypatch)
    assert not at.get("plotly_chart")
    text = _text(at)
    assert "inboxlab sim run" in text or "inboxlab policy promote" in text
    if page not in ("sim", "policy"):
        assert "inboxlab import postfix" in text


def test_dead_letters_are_masked(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(home, "dead-letters", monkeypatch)
    table = at.dataframe[0].value
    shown = table.to_csv()
    assert LIVE_RECIPIENT not in shown
    assert "j***@example.com" in shown
    assert "body" not in [c.lower() for c in table.columns]


def test_latency_filter_narrows_samples(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(home, "latency", monkeypatch)
    before = at.dataframe[0].value["n"].sum()
    at.multiselect(key="lat_provider").set_value(["yahoo"]).run()
    assert not at.exception
    after = at.dataframe[0].value["n"].sum()
    assert 0 < after < before


def test_policy_page_shows_promotion_trail(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(home, "policy", monkeypatch)
    text = _text(at)
    for stage in ("shadow", "canary", "promoted"):
        assert stage in text


def test_dash_command_binds_loopback_and_passes_home(tmp_path: Path) -> None:
    cmd = command(str(tmp_path), 8765, browser=False)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[-2:] == ["--home", str(tmp_path)]
