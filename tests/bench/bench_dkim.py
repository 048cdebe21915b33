"""DKIM signing throughput on one core: engine.dkim vs dkimpy, same message, same key.

Run: .venv/bin/python tests/bench/bench_dkim.py
"""

from __future__ import annotations

import time
from pathlib import Path

import dkim

from engine.dkim import load_signer

KEYS = Path(__file__).parents[2] / "fixtures" / "dkim"
MSG = (b"From: News <news@mail.acme.example>\r\nTo: ann@example.net\r\nSubject: Weekly\r\n"
       b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <m_1.1@mail.acme.example>\r\n"
       b"List-Unsubscribe: <https://unsub.acme.example/u/tok>\r\n"
       b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"Hello there, this is a line.\r\n" * 60)
HEADERS = [b"From", b"Subject", b"Date", b"Message-ID", b"List-Unsubscribe",
           b"List-Unsubscribe-Post", b"To"]


def rate(fn: object, seconds: float = 2.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()  # type: ignore[operator]
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    ours_rsa = load_signer("mail.acme.example", "r", KEYS / "test-rsa2048.pem")
    ours_ed = load_signer("mail.acme.example", "e", KEYS / "test-ed25519.pem", "ed25519-sha256")
    pem = (KEYS / "test-rsa2048.pem").read_bytes()
    base = rate(lambda: dkim.sign(MSG, b"r", b"mail.acme.example", pem,
                                  canonicalize=(b"relaxed", b"relaxed"),
                                  include_headers=HEADERS))
    rsa = rate(lambda: ours_rsa.sign(MSG))
    ed = rate(lambda: ours_ed.sign(MSG))
    print(f"dkimpy rsa-sha256      {base:8.0f} signatures/s (baseline)")
    print(f"engine rsa-sha256      {rsa:8.0f} signatures/s  {rsa / base:5.1f}x")
    print(f"engine ed25519-sha256  {ed:8.0f} signatures/s  {ed / base:5.1f}x")


if __name__ == "__main__":
    main()
