"""``inboxlab config`` through a real subprocess: exit codes, one line per problem, no traceback."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "fixtures" / "lab.toml"
BAD = ROOT / "fixtures" / "config-bad"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inboxlab", "config", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_check_ok_prints_one_summary_line() -> None:
    p = run("check", "fixtures/lab.toml")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    [line] = p.stdout.splitlines()
    assert line.startswith(
        "fixtures/lab.toml: ok: 2 tenants, 3 domains, 3 pools, 3 lanes, 2 policies"
    )


def test_check_prints_each_problem_once_and_exits_2() -> None:
    p = run("check", "fixtures/config-bad/many-problems.toml")
    assert p.returncode == 2
    assert p.stdout == "" and "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == len(set(lines)) == 21
    assert all(line.startswith("fixtures/config-bad/many-problems.toml: ") for line in lines)
    assert (
        "fixtures/config-bad/many-problems.toml: pools.bulk-b.source_ips[2]: "
        "'127.0.0.300' is not a valid IPv4 or IPv6 address"
    ) in lines
    assert "hunter2" not in p.stderr


def test_check_locates_policy_problems_in_the_policy_file() -> None:
    p = run("check", "fixtures/config-bad/policy-bad.toml")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    files = {line.split(": ", 1)[0] for line in p.stderr.splitlines()}
    assert files == {
        "fixtures/config-bad/policies/bad-lanes-v1.toml",
        "fixtures/config-bad/policies/bad-syntax-v1.toml",
        "fixtures/config-bad/policies/missing-lane-v1.toml",
    }


def test_missing_or_non_toml_file_is_one_line(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.toml", BAD / "syntax.toml", tmp_path / "bin.toml"):
        if path.name == "bin.toml":
            path.write_bytes(b"\x00\x01\x02 not toml = = =")
        p = run("check", str(path))
        assert p.returncode == 2
        [line] = p.stderr.splitlines()
        assert line.startswith(f"inboxlab: error: {path}: ")
        assert "Traceback" not in p.stderr


def test_show_reports_layers_and_sources_as_json() -> None:
    p = run(
        "show",
        "fixtures/lab.toml",
        "--pool",
        "mkt-b",
        "--provider",
        "outlook",
        "--domain",
        "hotmail.com",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    [row] = json.loads(p.stdout)
    assert row["pool"] == "mkt-b" and row["policy"] == "warmup-conservative-v1"
    names = [layer["name"] for layer in row["layers"]]
    assert names[0] == "builtin" and names[-1] == "lab:override:mkt-b.*"
    assert "lab:domain:hotmail.com" in names
    assert row["resolved"]["max_connections"] == 2
    assert row["source"]["max_connections"] == "lab:override:mkt-b.*"
    assert row["source"]["messages_per_second"] == "lab:domain:hotmail.com"


def test_show_text_and_unknown_pool() -> None:
    p = run("show", "fixtures/lab.toml", "--pool", "tx-a", "--provider", "gmail")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "pool tx-a -> gmail (policy default-v1)"
    bad = run("show", "fixtures/lab.toml", "--pool", "nope")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "inboxlab: error: unknown pool 'nope' (known: mkt-b, shared-c, tx-a)"
    ]


def test_hash_key_argument_and_stdin() -> None:
    want = "sha256:" + hashlib.sha256(b"acme-demo-key-1").hexdigest()
    assert run("hash-key", "acme-demo-key-1").stdout.strip() == want
    assert run("hash-key", "-", stdin="acme-demo-key-1\n").stdout.strip() == want
    # the demo lab stores exactly this hash
    assert want in LAB.read_text()
    empty = run("hash-key", "-", stdin="\n")
    assert empty.returncode == 2 and empty.stderr.startswith("inboxlab: error:")
