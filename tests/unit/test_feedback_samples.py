"""Every sample in fixtures/feedback parses to what expected.json says it must."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.feedback import DsnReport, parse

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "feedback"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text())


def test_every_sample_has_an_expectation_and_vice_versa() -> None:
    on_disk = {p.name for p in FIXTURES.glob("*.eml")}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 20


def test_samples_cover_the_required_shapes() -> None:
    kinds = [e["kind"] for e in EXPECTED.values()]
    assert kinds.count("dsn") >= 15 and kinds.count("arf") >= 5 and kinds.count("unknown") >= 3
    dialects = {e.get("dialect") for e in EXPECTED.values() if e["kind"] == "dsn"}
    for d in ("rfc3464", "qmail", "postfix", "exim", "sendmail", "gmail", "exchange",
              "yahoo", "lotus", "mimecast"):
        assert d in dialects, d
    types = {e.get("feedback_type") for e in EXPECTED.values() if e["kind"] == "arf"}
    assert {"abuse", "fraud", "auth-failure"} <= types


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_parses_to_expected(name: str) -> None:
    got = parse((FIXTURES / name).read_bytes()).as_dict()
    want = EXPECTED[name]
    for key, value in want.items():
        if key == "recipients":
            assert len(got["recipients"]) == len(value)
            for g, w in zip(got["recipients"], value, strict=True):
                assert {k: g.get(k) for k in w} == w
        else:
            assert got.get(key) == value, key


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_parses_the_same_from_str_and_with_crlf(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    base = parse(raw).as_dict()
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert parse(crlf).as_dict() == base
    lf = raw.replace(b"\r\n", b"\n")
    assert parse(lf).as_dict() == base
    assert parse(raw.decode("utf-8", "surrogateescape")).as_dict() == base


def test_permanent_matches_action_in_every_sample() -> None:
    seen = set()
    for name in EXPECTED:
        result = parse((FIXTURES / name).read_bytes())
        if isinstance(result, DsnReport):
            for r in result.recipients:
                assert r.permanent == (r.action == "failed")
                seen.add((r.action, r.status[0]))
    # failed with a 4.x.x status (RFC 3464 §10.1 after retries ran out) is in the set
    assert ("failed", "4") in seen and ("delayed", "4") in seen and ("failed", "5") in seen
