"""DKIM signatures made by engine.dkim verify with dkimpy (an independent implementation)."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.delivery.message import (
    parse_unsubscribe_token,
    parse_verp,
    unsubscribe_token,
    verp_address,
)
from engine.dkim import load_signer, public_key_record, relaxed_body, relaxed_header
from engine.errors import ConfigError, InputError

KEYS = Path(__file__).parents[2] / "fixtures" / "dkim"
RSA = load_signer("d.example", "r", KEYS / "test-rsa2048.pem")
ED = load_signer("d.example", "e", KEYS / "test-ed25519.pem", "ed25519-sha256")


def _verify(msg: bytes, signer: object) -> bool:
    rec = public_key_record(signer).encode()  # type: ignore[arg-type]
    return bool(dkim.verify(msg, dnsfunc=lambda name, timeout=5: rec))


def test_relaxed_forms() -> None:
    assert relaxed_header(b"SubJect :  a \t b\r\n  c  ") == b"subject:a b c"
    assert relaxed_body(b"x  \t y \r\n\r\n\r\n") == b"x y\r\n"
    assert relaxed_body(b"") == b"" and relaxed_body(b"\r\n\r\n") == b""


@pytest.mark.parametrize("signer", [RSA, ED], ids=["rsa", "ed25519"])
def test_sign_verifies_and_oversigns(signer: object) -> None:
    msg = (b"From: a@d.example\r\nTo: b@x.test\r\nSubject: hi\r\nDate: x\r\n"
           b"Message-ID: <1@d>\r\nList-Unsubscribe: <https://u/1>\r\n"
           b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n")
    out = signer.sign(msg, timestamp=1700000000)  # type: ignore[attr-defined]
    assert _verify(out, signer)
    h = out.split(b"h=", 1)[1].split(b";", 1)[0].replace(b"\r\n ", b"")
    assert h.count(b"From") == 2 and h.count(b"List-Unsubscribe-Post") == 2
    # an added second Subject breaks it (over-signing); so does a changed body
    assert not _verify(out.replace(b"To: b", b"Subject: pwned\r\nTo: b"), signer)
    assert not _verify(out.replace(b"body", b"bodY"), signer)


_name = st.sampled_from(["Subject", "X-Tag", "Cc", "Reply-To", "Keywords", "From"])
_value = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
_line = st.text(st.sampled_from(list("ab \tZ.-=")), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_name, _value, st.booleans()), max_size=6),
       st.lists(_line, max_size=8), st.sampled_from([RSA, ED]))
def test_random_messages_verify(headers: list[tuple[str, str, bool]], lines: list[str],
                                signer: object) -> None:
    parts = [b"From: a@d.example"]
    for name, value, fold in headers:
        v = value.encode()
        if fold and len(v) > 4:
            v = v[:4] + b"\r\n\t" + v[4:]
        parts.append(name.encode() + b": " + v)
    msg = b"\r\n".join(parts) + b"\r\n\r\n" + b"\r\n".join(x.encode() for x in lines)
    assert _verify(signer.sign(msg), signer)  # type: ignore[attr-defined]


def test_bad_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_signer("d", "s", KEYS / "test-ed25519.pem", "rsa-sha256")
    bad = tmp_path / "k.pem"
    bad.write_text("nope")
    with pytest.raises(ConfigError):
        load_signer("d", "s", bad)


def test_verp_and_unsubscribe_tokens_roundtrip_and_reject_forgeries() -> None:
    secret = b"k" * 32
    pid = "m_" + "ab" * 12
    addr = verp_address(secret, pid, "Ann@X.test", "bounce.d.example")
    got_id, got_hash = parse_verp(secret, addr)
    assert got_id == pid and len(got_hash) == 12
    with pytest.raises(InputError, match="forged"):
        parse_verp(b"other" * 8, addr)
    tok = unsubscribe_token(secret, "acme", "Ann@X.test", pid)
    t = parse_unsubscribe_token(secret, tok)
    assert (t.tenant, t.address, t.public_id) == ("acme", "ann@x.test", pid)
    with pytest.raises(InputError):
        parse_unsubscribe_token(secret, tok[:-1] + ("0" if tok[-1] != "0" else "1"))


_head_name = st.sampled_from(["To", "Date", "Message-ID", "X-Inboxlab-Lane", "Feedback-ID",
                              "List-Unsubscribe", "List-Unsubscribe-Post", "Subject", "Cc"])


def _head(headers: list[tuple[str, str]]) -> bytes:
    return b"".join(n.encode() + b": " + v.encode() + b"\r\n" for n, v in headers)


def _base(headers: list[tuple[str, str, bool]], lines: list[str], lf: bool) -> bytes:
    parts = [b"From: a@d.example"]
    for name, value, fold in headers:
        v = value.encode()
        if fold and len(v) > 4:
            v = v[:4] + b"\r\n\t" + v[4:]
        parts.append(name.encode() + b": " + v)
    msg = b"\r\n".join(parts) + b"\r\n\r\n" + b"\r\n".join(x.encode() for x in lines)
    return msg.replace(b"\r\n", b"\n") if lf else msg


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_head_name, _value), max_size=5),
       st.lists(st.tuples(_name, _value, st.booleans()), max_size=5),
       st.lists(_line, max_size=8), st.booleans(), st.sampled_from([RSA, ED]),
       # signing times up to late 2023: dkimpy refuses a t= more than 10 h in the future,
       # so a range reaching past today fails verification by design, not by a fault
       st.none() | st.integers(0, 1_700_000_000))
def test_sign_parts_is_sign_of_the_whole(head: list[tuple[str, str]],
                                         headers: list[tuple[str, str, bool]],
                                         lines: list[str], lf: bool, signer: object,
                                         ts: int | None) -> None:
    """``sign_parts(head, base)`` is byte for byte ``sign(head + base)`` (RSA PKCS#1 v1.5
    and Ed25519 are deterministic), twice over the same base (the cached preparation), and
    dkimpy verifies it."""
    h, base = _head(head), _base(headers, lines, lf)
    whole = signer.sign(h + base, timestamp=ts)  # type: ignore[attr-defined]
    assert signer.sign_parts(h, base, timestamp=ts) == whole  # type: ignore[attr-defined]
    assert signer.sign_parts(h, base, timestamp=ts) == whole  # type: ignore[attr-defined]
    other = b"To: z@q.test\r\n"
    assert signer.sign_parts(other, base, timestamp=ts) == \
        signer.sign(other + base, timestamp=ts)  # type: ignore[attr-defined]
    assert _verify(whole, signer)


@pytest.mark.parametrize("signer", [RSA, ED], ids=["rsa", "ed25519"])
def test_sign_parts_odd_heads_fall_back_to_sign(signer: object) -> None:
    base = b"From: a@d.example\r\nSubject: s\r\n\r\nbody\r\n"
    for head in (b"", b"To: b@x.test", b"To: b@x.test\n", b"To: b@x.test\r\n\r\n"):
        assert signer.sign_parts(head, base, timestamp=5) == \
            signer.sign(head + base, timestamp=5), head  # type: ignore[attr-defined]
    # a base starting with folding whitespace continues the head's last field
    cont = b" more\r\nFrom: a@d.example\r\n\r\nx\r\n"
    out = signer.sign_parts(b"Subject: a\r\n", cont, timestamp=5)  # type: ignore[attr-defined]
    assert out == signer.sign(b"Subject: a\r\n" + cont, timestamp=5)  # type: ignore[attr-defined]
