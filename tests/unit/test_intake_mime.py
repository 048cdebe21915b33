"""``fast_base`` is byte-identical to ``build_base`` wherever it answers, and answers the
plain case (so the intake really skips the email package for it)."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.delivery.message import build_base
from engine.intake.mime import fast_base

# alphabets that reach both branches: mostly-safe characters plus the ones that force a
# fallback (quotes, '=', '?', '<', ';', '@', tabs, non-ASCII, doubled spaces, long lines)
SAFE = "abcXYZ019 .,!'()/:_#&%+-"
TRICKY = SAFE + "\"=?<>;@\t\\é\x7f"
words = st.text(alphabet=SAFE, max_size=50) | st.text(alphabet=TRICKY, max_size=90)
names = st.from_regex(r"[A-Za-z0-9]{1,8}( [A-Za-z0-9]{1,8}){0,2}", fullmatch=True) | \
    st.text(alphabet="abcXY 09\"é,", max_size=20)
addrs = st.from_regex(r"[a-z0-9+_-]{1,8}(\.[a-z0-9]{1,5})?@[a-z0-9-]{1,8}\.(example|net)",
                      fullmatch=True) | \
    st.from_regex(r"[a-z0-9+_.-]{1,12}@[a-z0-9.-]{1,12}\.(?:example|net)", fullmatch=True)
texts = st.lists(st.sampled_from([*"ab Z09.,\n\n", "x" * 40]), max_size=60).map(
    "".join) | st.lists(st.sampled_from([*"ab Z09.,\n", "x" * 40, "é", "\r", "\t"]),
                        max_size=60).map("".join)
headers = st.dictionaries(st.sampled_from(["X-A", "X-Tag", "List-Id", "Comments",
                                           "X-Inboxlab-Lane", "Keywords", "bad name"]),
                          words, max_size=2)


def _check(**kw: Any) -> bytes | None:
    fast = fast_base(**kw)
    if fast is not None:
        assert fast == build_base(**kw)
    return fast


@settings(max_examples=400, deadline=None)
@given(from_addr=addrs, from_name=st.none() | names, subject=words, text=texts,
       reply_to=st.none() | addrs, headers=headers, html=st.none() | st.just("<p>hi</p>"))
@example(from_addr="a@b.example", from_name=None, subject="", text="", reply_to=None,
         headers={}, html=None)
@example(from_addr="a@b.example", from_name="Ann Lee", subject="Hi there", text="x\n\n",
         reply_to="r@b.example", headers={"X-A": "1"}, html=None)
def test_fast_base_is_byte_identical_where_it_answers(**kw: Any) -> None:
    _check(**kw)


def test_the_plain_case_takes_the_fast_path() -> None:
    kw: dict[str, Any] = dict(from_addr="news@mail.acme.example", from_name="Acme News",
                              subject="Your code is 123456", text="Hello there.\n" * 20,
                              reply_to="help@acme.example", headers={"X-Campaign": "wk12"})
    assert _check(**kw) is not None
    assert _check(**{**kw, "text": "no final newline"}) is not None
    for slow in ({"html": "<p>x</p>"}, {"subject": "Grüße"}, {"text": "x" * 79},
                 {"from_name": 'Ann "the" Lee'}, {"subject": "=?utf-8?q?hi?="},
                 {"headers": {"X-Inboxlab-Lane": "bulk"}}, {"text": "tab\there"}):
        assert fast_base(**{**kw, **slow}) is None, slow


SAFE_WORDS = r"[A-Za-z0-9.,!'()/:_#&%+-]{1,10}( [A-Za-z0-9.,!'()/:_#&%+-]{1,10}){0,4}"


@settings(max_examples=300, deadline=None)
@given(from_addr=st.from_regex(r"[a-z0-9+_-]{1,8}(\.[a-z0-9]{1,5})?@[a-z0-9-]{1,8}\.example",
                               fullmatch=True),
       from_name=st.none() | st.from_regex(r"[A-Za-z0-9]{1,8}( [A-Za-z0-9]{1,8}){0,2}",
                                           fullmatch=True),
       subject=st.from_regex(SAFE_WORDS, fullmatch=True),
       text=st.lists(st.text(alphabet="".join(map(chr, range(32, 127))), max_size=78),
                     max_size=30).map("\n".join),
       headers=st.dictionaries(st.sampled_from(["X-A", "X-Campaign", "List-Id", "Keywords"]),
                               st.from_regex(SAFE_WORDS, fullmatch=True), max_size=3))
def test_fast_base_answers_the_whole_plain_domain(**kw: Any) -> None:
    fast = fast_base(**kw)
    assert fast is not None
    assert fast == build_base(**kw)
