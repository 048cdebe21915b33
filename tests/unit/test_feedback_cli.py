"""``inboxlab feedback parse`` through the real console script, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "feedback"
INBOXLAB = Path(sys.executable).with_name("inboxlab")


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(INBOXLAB), "feedback", "parse", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_several_files_a_missing_one_and_a_directory(tmp_path: Path) -> None:
    files = [
        str(FIXTURES / "postfix_dsn.eml"),
        str(tmp_path / "missing.eml"),
        str(FIXTURES / "arf_multi_rcpt.eml"),
        str(tmp_path),
        str(FIXTURES / "garbage.eml"),
    ]
    proc = _run(*files)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert [x["file"] for x in lines] == files
    assert [x["kind"] for x in lines] == ["dsn", "unknown", "arf", "unknown", "unknown"]
    dsn = lines[0]
    assert dsn["recipients"][0] == {
        "recipient": "bob@example.org",
        "action": "failed",
        "status": "5.1.1",
        "permanent": True,
        "diagnostic": "550 5.1.1 <bob@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
        "original_recipient": "bob@example.org",
        "remote_mta": "mx.example.org",
    }
    assert lines[1]["reason"] == "no such file"
    assert lines[2]["original_rcpt_to"] == [
        "u1@reports.example.net", "u2@reports.example.net", "u3@reports.example.net"]
    for key in ("feedback_type", "original_mail_from", "original_message_id", "source_ip",
                "reported_domain", "user_agent"):
        assert key in lines[2]
    assert lines[3]["reason"] == "is a directory"
    assert lines[4]["reason"].startswith("binary data")


def test_stdin_dash() -> None:
    proc = _run("-", stdin=(FIXTURES / "qmail.eml").read_bytes())
    assert proc.returncode == 0
    (rec,) = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert rec["file"] == "-" and rec["kind"] == "dsn"
    assert [r["status"] for r in rec["recipients"]] == ["5.1.1", "5.7.1"]


def test_empty_stdin_is_unknown_not_an_error() -> None:
    proc = _run("-", stdin=b"")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"file": "-", "kind": "unknown", "reason": "empty input"}


def test_no_arguments_is_a_usage_error_on_one_line() -> None:
    proc = _run()
    assert proc.returncode == 2
    err = proc.stderr.decode().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("inboxlab: error:")
    assert b"Traceback" not in proc.stderr
