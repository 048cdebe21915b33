"""``inboxlab classify`` through a real subprocess: single mode and --jsonl mode."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

EXE = [sys.executable, "-m", "inboxlab"]
KEYS = {"temporary", "category", "action", "scope", "retry_after_s", "rule"}


def _run(args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_single_mode_prints_one_json_object() -> None:
    r = _run(
        [
            "classify",
            "--provider",
            "gmail",
            "--code",
            "421",
            "4.7.28 Gmail has detected an unusual rate of email originating from your IP address",
        ]
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= KEYS
    assert out["rule"] == "gmail.4_7_28.ip_rate"
    assert out["temporary"] is True and out["action"] == "retry_slow_down"


def test_single_mode_without_provider() -> None:
    r = _run(["classify", "550 5.1.1 <a@example.com>: Recipient address rejected: User unknown"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["provider"] == "generic" and out["category"] == "mailbox_unknown"


@pytest.mark.parametrize("args", [["classify"], ["classify", "--code", "42", "x"]])
def test_bad_input_is_one_line_error(args: list[str]) -> None:
    r = _run(args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inboxlab: error:")
    assert "Traceback" not in r.stderr


def test_jsonl_mode_keeps_order_and_survives_bad_lines() -> None:
    lines = [
        json.dumps(
            {
                "provider": "yahoo.com",
                "text": "421 4.7.0 [TSS04] Messages from 192.0.2.1 "
                "temporarily deferred due to unexpected volume or user complaints",
            }
        ),
        "this is not json",
        json.dumps({"code": 550, "enhanced": "5.1.1", "text": "nope"}),
        json.dumps(["a", "list"]),
        json.dumps({"provider": 7, "text": "x"}),
        json.dumps({"text": "smtp; 552 5.2.2 Mailbox full", "id": "m-1"}),
        json.dumps({"code": "abc", "text": "x"}),
    ]
    r = _run(["classify", "--jsonl"], "\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == len(lines)
    assert out[0]["rule"] == "yahoo.tss04.volume" and out[0]["temporary"] is True
    assert out[1]["line"] == 2 and "error" in out[1]
    assert out[2]["category"] == "mailbox_unknown" and out[2]["code"] == 550
    assert "error" in out[3] and "error" in out[4] and "error" in out[6]
    assert out[5]["id"] == "m-1" and out[5]["category"] == "mailbox_full"
    for item in (out[0], out[2], out[5]):
        assert set(item) >= KEYS
