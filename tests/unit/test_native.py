"""engine.native: a compiled build is used only when it matches every source it came from."""

from __future__ import annotations

import importlib
import json
import sysconfig
from pathlib import Path

import pytest

from engine import native
from engine.policy import scheduler


def _manifest(out: Path, **override: object) -> None:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    data: dict[str, object] = {
        "abi": native._abi(),
        "sources": {m: native._digest(native._source(m)) for m in native.MODULES},
        "files": {m: m + suffix for m in native.MODULES},
    }
    data.update(override)
    out.mkdir(parents=True, exist_ok=True)
    for name in data["files"].values():  # type: ignore[union-attr]
        (out / str(name)).write_bytes(b"")
    (out / native.MANIFEST).write_text(json.dumps(data))


def test_no_manifest_means_not_built(tmp_path: Path) -> None:
    assert native.check(tmp_path) == ("not built", {})


def test_matching_manifest_maps_every_module(tmp_path: Path) -> None:
    _manifest(tmp_path)
    status, files = native.check(tmp_path)
    assert status == "native"
    assert sorted(files) == sorted(native.MODULES)
    assert all(f.parent == tmp_path for f in files.values())


def test_one_edited_source_turns_the_whole_build_off(tmp_path: Path) -> None:
    digests = {m: native._digest(native._source(m)) for m in native.MODULES}
    digests["engine.policy.bucket"] = "0" * 64  # as if bucket.py changed after the build
    _manifest(tmp_path, sources=digests)
    status, files = native.check(tmp_path)
    assert status == "stale: engine/policy/bucket.py changed since the build"
    assert files == {}


def test_build_for_another_interpreter_is_ignored(tmp_path: Path) -> None:
    _manifest(tmp_path, abi="cpython-39 .cpython-39-x86_64-linux-gnu.so")
    status, files = native.check(tmp_path)
    assert status.startswith("built for cpython-39") and files == {}


def test_missing_compiled_file_is_reported(tmp_path: Path) -> None:
    _manifest(tmp_path)
    (tmp_path / ("engine.policy.lanes" + sysconfig.get_config_var("EXT_SUFFIX"))).unlink()
    status, files = native.check(tmp_path)
    assert status.startswith("missing ") and "engine.policy.lanes" in status
    assert files == {}


def test_another_module_list_is_ignored(tmp_path: Path) -> None:
    sources = {m: native._digest(native._source(m)) for m in native.MODULES[:-1]}
    _manifest(tmp_path, sources=sources)
    assert native.check(tmp_path) == ("built for another module list", {})


def test_loaded_scheduler_agrees_with_the_status() -> None:
    """This process imported the compiled scheduler exactly when install() said native."""
    compiled = scheduler.__file__.endswith(sysconfig.get_config_var("EXT_SUFFIX"))
    assert compiled == (native.STATUS == "native"), native.STATUS


def test_every_listed_module_loads_the_same_way() -> None:
    """All or nothing: every module of the build (the policy core and the simulation's)
    is compiled, or none is -- a compiled module never runs beside an interpreted
    neighbour of its build."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    kinds = {name: importlib.import_module(name).__file__.endswith(suffix)  # type: ignore[union-attr]
             for name in native.MODULES}
    assert set(kinds.values()) == {native.STATUS == "native"}, kinds


def test_unreadable_manifest_is_a_status_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / native.MANIFEST).write_text("{not json")
    status, files = native.check(tmp_path)
    assert status.startswith("unreadable manifest") and files == {}


@pytest.mark.parametrize("value", ["0"])
def test_env_switch_forces_the_interpreted_core(monkeypatch: pytest.MonkeyPatch,
                                                 value: str) -> None:
    monkeypatch.setenv("INBOXLAB_NATIVE", value)
    before = native.STATUS
    try:
        assert native.install() == "off"
    finally:
        native.STATUS = before
