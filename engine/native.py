"""The policy core (and the simulation's hot path) compiled to C with mypyc: optional,
checked against its sources, never stale.

Owns ``build`` (compile the modules listed in ``MODULES`` with mypyc into
``build/native/``, outside the source tree, with a manifest of each source's SHA-256) and
``install``, called once from ``engine/__init__.py`` (which ``sim/__init__.py`` imports
first, so no listed module loads before the finder is in place). If a manifest exists, was
built for this interpreter and EVERY listed source still has the digest it was compiled
from, a finder at the front of ``sys.meta_path`` loads those modules from the compiled
files; otherwise nothing happens and the ``.py`` files run as usual. The compiled code is
the same source (the policy modules mypy-strict, see ``[tool.mypy]``; the simulation's
type-checked by the build): a simulation and the live engine still run one policy core,
only faster. All or nothing: the modules call each other natively, so one edited source
turns the whole set off until ``inboxlab native build`` runs again.
``INBOXLAB_NATIVE=0`` forces the interpreted code (a test runs a scenario both ways and
compares the event files byte for byte); ``INBOXLAB_NATIVE_DIR`` reads the build from
another directory.

Must not import anything of the project at module level (it runs while ``engine`` loads).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

# the policy modules that run per decision; types/params/classify stay interpreted (data
# definitions, and the classifier's work is in its C regex and Aho-Corasick engines); then
# the simulation's per-dispatch path: the world's glue, the audience, the provider model
MODULES = (
    "engine.policy.automation",
    "engine.policy.breaker",
    "engine.policy.bucket",
    "engine.policy.lanes",
    "engine.policy.retry",
    "engine.policy.scheduler",
    "engine.policy.warmup",
    "engine.policy.windows",
    "sim.audience",
    "sim.providers.facts",
    "sim.providers.mailboxes",
    "sim.providers.model",
    "sim.providers.windows",
    "sim.world",
)
PACKAGES = ("engine", "sim")  # the trees a build copies (every MODULES entry is in one)
ROOT = Path(__file__).resolve().parent.parent
# where the build lives (``INBOXLAB_NATIVE_DIR`` moves it: a test builds into a temporary one)
OUT = Path(os.environ.get("INBOXLAB_NATIVE_DIR") or ROOT / "build" / "native")
MANIFEST = "manifest.json"

# what ``install`` found: "native", "off" (INBOXLAB_NATIVE=0), "not built", or "stale: ..."
STATUS = "not built"


def _source(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _abi() -> str:
    return f"{sys.implementation.cache_tag} {sysconfig.get_config_var('EXT_SUFFIX')}"


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules (and mypyc's shared group library) by full name."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Any = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def check(out: Path = OUT) -> tuple[str, dict[str, Path]]:
    """(status, compiled files by module name) of the build in ``out``."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        return "not built", {}
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}", {}
    if manifest.get("abi") != _abi():
        return f"built for {manifest.get('abi')}, this is {_abi()}", {}
    if sorted(manifest.get("sources", {})) != sorted(MODULES):
        return "built for another module list", {}
    for module, digest in manifest["sources"].items():
        src = _source(module)
        if not src.is_file() or _digest(src) != digest:
            return f"stale: {src.relative_to(ROOT)} changed since the build", {}
    files = {name: out / file for name, file in manifest["files"].items()}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        return f"missing {missing[0]}", {}
    return "native", files


def install() -> str:
    """Put the compiled modules first on the import path when they match their sources."""
    global STATUS
    if os.environ.get("INBOXLAB_NATIVE", "1") == "0":
        STATUS = "off"
        return STATUS
    STATUS, files = check()
    if files and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(files))
    return STATUS


def build(out: Path = OUT) -> dict[str, Any]:
    """Compile ``MODULES`` with mypyc into ``out`` (replaced atomically); returns the manifest.

    Raises ``engine.errors.StateError`` when mypyc is missing or the compile fails."""
    from engine.errors import StateError

    try:
        import mypyc  # noqa: F401  (ships with mypy: the dev extra)
    except ImportError:
        raise StateError("the native build needs mypyc, which ships with mypy: "
                         "pip install -e '.[dev]'") from None
    digests = {m: _digest(_source(m)) for m in MODULES}
    with tempfile.TemporaryDirectory(prefix="inboxlab-native-") as tmp:
        work = Path(tmp) / "src"
        # a copy of the sources only: mypyc writes next to what it compiles, and the
        # project's own pyproject would be read as the build's setup configuration
        for package in PACKAGES:
            shutil.copytree(ROOT / package, work / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
        for module, digest in digests.items():  # compile exactly what was hashed
            if _digest(work / (module.replace(".", "/") + ".py")) != digest:
                raise StateError(f"{module} changed during the build; run it again")
        files = [module.replace(".", "/") + ".py" for module in MODULES]
        env = {**os.environ, "MYPYC_OPT_LEVEL": "3"}
        proc = subprocess.run([sys.executable, "-m", "mypyc", "--ignore-missing-imports",
                               *files], cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            raise StateError(f"mypyc failed: {tail[0]}")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        stage = Path(tmp) / "out"
        stage.mkdir()
        found: dict[str, str] = {}
        for so in work.rglob(f"*{suffix}"):
            if "build" in so.relative_to(work).parts:
                continue
            rel = so.relative_to(work)
            name = ".".join([*rel.parts[:-1], so.name[: -len(suffix)]])
            target = name + suffix
            shutil.copy2(so, stage / target)
            found[name] = target
        missing = [m for m in MODULES if m not in found]
        if missing:
            raise StateError(f"mypyc produced no module for {missing[0]}")
        manifest = {"abi": _abi(), "sources": digests, "files": found}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        shutil.move(str(stage), str(out))
        shutil.rmtree(old, ignore_errors=True)
    return manifest
