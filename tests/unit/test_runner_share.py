"""An engine node's share of the pools (``Runner(node_share=...)``) reaches every scheduler."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import InputError
from engine.runner import Runner
from engine.spool import Spool

LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"


def test_every_scheduler_of_a_node_uses_its_share(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    try:
        config = load_config(LAB, env={})
        half = Runner(config, spool, secret=b"s" * 32, node_share=0.5)
        assert half.groups and {g.scheduler.share for g in half.groups.values()} == {0.5}
        whole = Runner(config, spool, secret=b"s" * 32)
        assert {g.scheduler.share for g in whole.groups.values()} == {1.0}
        with pytest.raises(InputError, match="node_share"):
            Runner(config, spool, secret=b"s" * 32, node_share=0.0)
    finally:
        spool.close()
