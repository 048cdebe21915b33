"""Property tests of engine.feedback: total on any input, and exact on generated DSNs."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.feedback import ACTIONS, ArfReport, DsnReport, Unknown, parse

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "feedback"
SAMPLES = sorted(p.read_bytes() for p in FIXTURES.glob("*.eml"))

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _well_formed(result: object) -> None:
    assert isinstance(result, DsnReport | ArfReport | Unknown)
    json.dumps(result.as_dict())  # text only, JSON-encodable
    if isinstance(result, Unknown):
        assert result.reason
    elif isinstance(result, DsnReport):
        assert result.recipients
        for r in result.recipients:
            assert r.recipient and r.action in ACTIONS
            assert r.permanent == (r.action == "failed")
            assert r.status[:1] in "245" and r.status.count(".") == 2
    else:
        assert result.feedback_type
        assert result.original_rcpt_to is None or result.original_rcpt_to != []


@FAST
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    _well_formed(parse(data))


@FAST
@given(st.text(max_size=1500))
def test_arbitrary_text_never_raises(data: str) -> None:
    _well_formed(parse(data))


@FAST
@given(
    st.sampled_from(SAMPLES),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=400),
    st.binary(max_size=40),
)
def test_mangled_samples_never_raise(sample: bytes, at: int, cut: int, junk: bytes) -> None:
    at %= len(sample) + 1
    _well_formed(parse(sample[:at] + junk + sample[at + cut :]))


_local = st.from_regex(r"[a-z][a-z0-9._+-]{0,12}[a-z0-9]", fullmatch=True)
_domain = st.from_regex(r"[a-z][a-z0-9-]{0,8}\.(example|test|example\.org)", fullmatch=True)
_recipient = st.fixed_dictionaries(
    {
        "addr": st.builds(lambda lp, d: f"{lp}@{d}", _local, _domain),
        "action": st.sampled_from(ACTIONS),
        "status": st.builds(
            lambda c, s, d: f"{c}.{s}.{d}",
            st.sampled_from("245"),
            st.integers(0, 7),
            st.integers(0, 30),
        ),
        "comment": st.booleans(),
        "prefix": st.sampled_from(["rfc822; ", "RFC822;", "", "rfc822;<"]),
        "upper": st.booleans(),
    }
)


@FAST
@given(
    st.lists(_recipient, min_size=1, max_size=6, unique_by=lambda r: r["addr"]),
    st.booleans(),
    st.booleans(),
)
def test_generated_dsn_round_trips(recipients: list[dict], blank_lines: bool, crlf: bool) -> None:
    blocks = []
    for r in recipients:
        addr = r["addr"] + (">" if r["prefix"].endswith("<") else "")
        status = r["status"] + (" (some comment)" if r["comment"] else "")
        action = r["action"].upper() if r["upper"] else r["action"]
        name = "FINAL-RECIPIENT" if r["upper"] else "Final-Recipient"
        blocks.append(f"{name}: {r['prefix']}{addr}\nAction: {action}\nStatus: {status}\n")
    sep = "\n" if blank_lines else ""
    body = (
        "From: MAILER-DAEMON@mx.example\nTo: bounce@sender.example\nSubject: x\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="Q"\n\n'
        "--Q\nContent-Type: text/plain\n\nsee below\n\n"
        "--Q\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        + sep.join(blocks)
        + "\n--Q--\n"
    )
    if crlf:
        body = body.replace("\n", "\r\n")
    result = parse(body.encode())
    assert isinstance(result, DsnReport)
    got = [(x.recipient, x.action, x.status, x.permanent) for x in result.recipients]
    want = [(r["addr"], r["action"], r["status"], r["action"] == "failed") for r in recipients]
    assert got == want
