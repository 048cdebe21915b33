"""Webhook signatures, secret references and the backoff schedule."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import ConfigError, InputError
from engine.spool import Spool
from engine.webhooks import WebhookDispatcher, resolve_secret, sign, verify


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=512),
       st.integers(min_value=0, max_value=2**40))
def test_sign_verify_roundtrip_and_tamper(secret: bytes, body: bytes, ts: int) -> None:
    header = sign(secret, body, ts)
    assert verify(secret, header, body, now=ts) == ts
    with pytest.raises(InputError):
        verify(secret, header, body + b"x", now=ts)
    with pytest.raises(InputError):
        verify(secret + b"!", header, body, now=ts)
    with pytest.raises(InputError):  # the timestamp is covered by the MAC
        verify(secret, header.replace(f"t={ts},", f"t={ts + 1},"), body, now=ts)


def test_verify_rejects_stale_and_malformed() -> None:
    h = sign(b"s", b"{}", 1000)
    assert verify(b"s", h, b"{}", now=1299) == 1000
    with pytest.raises(InputError, match="tolerance"):
        verify(b"s", h, b"{}", now=1301)
    for bad in ("", "v1=abc", "t=x,v1=00", "garbage"):
        with pytest.raises(InputError):
            verify(b"s", bad, b"{}", now=1000)


def test_resolve_secret(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("from-file\n")
    assert resolve_secret("env:X", env={"X": "abc"}) == b"abc"
    assert resolve_secret("file:s.txt", base=tmp_path) == b"from-file"
    with pytest.raises(ConfigError, match="not set"):
        resolve_secret("env:NOPE", env={})
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_secret("file:missing", base=tmp_path)


def test_backoff_grows_and_caps(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    d = WebhookDispatcher(sp, [], base_backoff=2.0, max_backoff=30.0)
    assert [d.backoff(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    j = WebhookDispatcher(sp, [], base_backoff=2.0, rng=random.Random(1))
    assert all(2.0 * 2 ** (n - 1) <= j.backoff(n) <= 2.4 * 2 ** (n - 1) for n in range(1, 6))
    sp.close()
