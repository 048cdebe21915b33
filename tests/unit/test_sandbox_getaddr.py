"""The sandbox's MAIL/RCPT address shortcut answers exactly what aiosmtpd's parser does."""

from __future__ import annotations

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.sandbox.server import ModelSMTP

ATOM = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=12)
LABEL = st.text(alphabet="abcxyz0129-", min_size=1, max_size=10)
LOCAL = st.lists(ATOM, min_size=1, max_size=3).map(".".join)
DOMAIN = st.lists(LABEL, min_size=1, max_size=3).map(".".join)
TAIL = st.sampled_from(["", " SIZE=1000", "\tBODY=8BITMIME", " (comment)", "x", ">", " "])
NOISE = st.text(alphabet='<>@." ()\\abc', max_size=12)


def _pair(limit: int) -> tuple[ModelSMTP, SMTP]:
    ours = object.__new__(ModelSMTP)
    theirs = object.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = limit
    return ours, theirs


def _same(arg: str, limit: int) -> None:
    ours, theirs = _pair(limit)
    try:
        expected: object = SMTP._getaddr(theirs, arg)
    except Exception as exc:  # the parser's own errors must be raised the same way
        expected = type(exc)
    try:
        got: object = ours._getaddr(arg)
    except Exception as exc:
        got = type(exc)
    assert got == expected, arg


@settings(max_examples=400)
@given(local=LOCAL, domain=DOMAIN, tail=TAIL, limit=st.sampled_from([0, 8, 64]))
def test_plain_angle_addresses_match_the_parser(local: str, domain: str, tail: str,
                                                limit: int) -> None:
    _same(f"<{local}@{domain}>{tail}", limit)


@settings(max_examples=300)
@given(arg=NOISE, limit=st.sampled_from([0, 64]))
def test_anything_else_matches_the_parser(arg: str, limit: int) -> None:
    _same(arg, limit)
