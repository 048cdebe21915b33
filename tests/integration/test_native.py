"""The compiled core (policy and simulation) decides exactly like the interpreted one.

Builds the core from the current sources into a temporary directory with mypyc (as
``inboxlab native build`` does), runs one seeded scenario through the CLI in a process that
loads the compiled modules and in one that is forced to the ``.py`` files, and requires
byte-identical ``events.parquet`` and ``summary.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine import native

CLI = [sys.executable, "-m", "inboxlab.cli"]


def _run(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_compiled_and_interpreted_cores_give_identical_runs(tmp_path: Path) -> None:
    out = tmp_path / "native"
    manifest = native.build(out)
    assert sorted(manifest["sources"]) == sorted(native.MODULES)
    assert native.check(out)[0] == "native"
    base = {k: v for k, v in os.environ.items() if not k.startswith("INBOXLAB_NATIVE")}
    compiled = {**base, "INBOXLAB_NATIVE_DIR": str(out)}
    interpreted = {**base, "INBOXLAB_NATIVE": "0"}
    assert json.loads(_run(["native", "status", "--json"], compiled))["compiled"] is True
    assert json.loads(_run(["native", "status", "--json"], interpreted))["compiled"] is False
    runs = {}
    for name, env in (("compiled", compiled), ("interpreted", interpreted)):
        _run(["sim", "run", "warmup-30d", "--seed", "7", "--scale", "0.02",
              "--out", str(tmp_path / name)], env)
        runs[name] = tmp_path / name
    a, b = runs["compiled"], runs["interpreted"]
    events = (a / "events.parquet").read_bytes()
    assert len(events) > 10_000
    assert events == (b / "events.parquet").read_bytes()
    summary = json.loads((a / "summary.json").read_text())
    assert summary["delivered"] > 0 and summary["transitions"]
    assert (a / "summary.json").read_text() == (b / "summary.json").read_text()
    # the hand-written constructors keep the dataclasses' contract in both builds
    for env, native_flag in ((compiled, "True"), (interpreted, "False")):
        proc = subprocess.run([sys.executable, "-c", _CONTRACT], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [native_flag, "frozen", "equal", "hashable", "record"]


_CONTRACT = """
import dataclasses
from engine.policy.scheduler import _NATIVE, BatchRecord, Dispatch
kw = dict(lane="transactional", tenant="t", sending_domain="d.example", provider="gmail",
          pool="p", source_ip="127.0.0.9", ids=(4, 5), messages_per_connection=2,
          max_connections=1, reasons=("why",))
d = Dispatch(**kw)
print(_NATIVE)
try:
    d.pool = "other"
except dataclasses.FrozenInstanceError:
    print("frozen")
assert d.pool == "p" and d.n == 2
print("equal" if d == Dispatch(**kw) and d != Dispatch(**{**kw, "ids": (4,)}) else "unequal")
print("hashable" if hash(d) == hash(Dispatch(**kw)) else "unhashable")
r = BatchRecord(at=3.0)
r.delivered.append(1)
print("record" if BatchRecord(at=3.0).delivered == [] and r.delivered == [1] else "shared")
"""
