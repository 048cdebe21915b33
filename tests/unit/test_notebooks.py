"""The notebooks in notebooks/ execute top to bottom against a warehouse built from fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

from tests.unit.dashdata import REPO, build_home

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_home(tmp_path_factory.mktemp("nb") / "home")


def test_there_are_notebooks() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"deferrals", "warmup_projection", "calibration"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOXLAB_HOME", str(home))
    nb = jupytext.read(path)
    assert nb.cells and any(c.cell_type == "code" for c in nb.cells)
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute(
        env={**os.environ, "INBOXLAB_HOME": str(home)})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "stream" for o in outputs)
