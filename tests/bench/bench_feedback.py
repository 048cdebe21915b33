"""Benchmark of feedback parsing: typical DSNs per second on one core.

Run: ``.venv/bin/python tests/bench/bench_feedback.py``. Prints messages/s for a mix of
typical bounces (MIME DSNs and plain-text notices) and for ARF reports, and the ratio to
the stdlib's bare ``email.message_from_bytes`` on the same bytes, measured in this run.
The target is at least 2,000 typical DSNs/s.
"""

from __future__ import annotations

import email
import time
from collections.abc import Callable
from pathlib import Path

from engine.feedback import parse

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "feedback"
DSNS = [
    "postfix_dsn.eml",
    "gmail_dsn.eml",
    "o365_report.eml",
    "outlook_com_crlf.eml",
    "multi_recipient_dsn.eml",
    "exim_plain.eml",
    "qmail.eml",
    "exchange2010_ndr.eml",
    "gmail_old_plain.eml",
    "sendmail_plain.eml",
]
ARFS = ["arf_abuse_full.eml", "arf_headers_only.eml", "arf_multi_rcpt.eml", "yahoo_cfl_b64.eml"]


def rate(fn: Callable[[bytes], object], msgs: list[bytes], seconds: float = 1.5) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for m in msgs:
            fn(m)
        n += len(msgs)
    return n / (time.perf_counter() - start)


def main() -> None:
    dsns = [(FIXTURES / n).read_bytes() for n in DSNS]
    arfs = [(FIXTURES / n).read_bytes() for n in ARFS]
    for m in dsns:
        assert parse(m).kind == "dsn"
    base = rate(email.message_from_bytes, dsns)
    got = rate(parse, dsns)
    arf = rate(parse, arfs)
    print(f"stdlib message_from_bytes (baseline): {base:10,.0f} msgs/s")
    print(f"parse, typical DSN mix ({len(dsns)} shapes): {got:10,.0f} msgs/s "
          f"({got / base:.2f}x baseline; target >= 2,000/s)")
    print(f"parse, ARF mix ({len(arfs)} shapes):          {arf:10,.0f} msgs/s "
          f"({arf / base:.2f}x baseline)")
    if got < 2000:
        raise SystemExit("below the 2,000 DSNs/s target")


if __name__ == "__main__":
    main()
