"""Property tests of reply classification: total, class-faithful, inside the vocabulary."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policy.classify import Classifier
from engine.policy.smtpreply import _parse_general, parse_reply
from engine.policy.types import ACTIONS, CATEGORIES, SCOPES
from engine.profiles import load_profiles

PROFILES = load_profiles()
CLF = Classifier(PROFILES)
PROVIDERS = st.one_of(
    st.none(),
    st.sampled_from(sorted(PROFILES)),
    st.sampled_from(["gmail.com", "aol.com", "example-com.mail.protection.outlook.com", "x.test"]),
    st.text(max_size=20),
)
WORDS = st.sampled_from(
    [
        "user unknown",
        "spamhaus",
        "greylisted",
        "quota",
        "relay access denied",
        "TLS required",
        "SPF",
        "rate limited",
        "[TSS04]",
        "RP-001",
        "too large",
        "blocked",
        "policy",
        "\n",
        "-",
        "smtp;",
        "Diagnostic-Code:",
        "#4.16.1",
        "550-5.1.1",
        "192.0.2.1",
        "5.7.",
        "4.7.28",
    ]
)
REPLY_TEXT = st.lists(st.one_of(WORDS, st.text(max_size=15)), max_size=12).map(" ".join)
ENHANCED = st.one_of(
    st.none(),
    st.builds(
        lambda c, s, d: f"{c}.{s}.{d}",
        st.sampled_from("245"),
        st.integers(0, 999),
        st.integers(0, 999),
    ),
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(PROVIDERS, st.one_of(st.none(), st.integers(-10, 1000)), REPLY_TEXT, ENHANCED)
def test_any_input_gives_a_vocabulary_verdict(
    provider: str | None, code: int | None, text: str, enhanced: str | None
) -> None:
    v = CLF.classify(provider, code, text, enhanced)
    assert v.category in CATEGORIES
    assert v.action in ACTIONS
    assert v.scope in SCOPES
    assert v.rule
    assert v.provider in PROFILES
    assert v.retry_after_s is None or v.retry_after_s > 0
    assert v.code is None or 200 <= v.code <= 599


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([421, 450, 451, 452, 454, 550, 551, 552, 553, 554, 571]),
    REPLY_TEXT,
    st.booleans(),
)
def test_temporary_is_the_class_of_a_leading_code(code: int, rest: str, pass_code: bool) -> None:
    text = f"{code} {rest}"
    v = CLF.classify(None, code if pass_code else None, text)
    assert v.code == code
    assert v.temporary is (code < 500)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([421, 451, 550, 554]),
    st.integers(0, 9),
    st.integers(0, 30),
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=30),
        min_size=1,
        max_size=5,
    ),
)
def test_multiline_reply_keeps_code_and_enhanced(
    code: int, subject: int, detail: int, lines: list[str]
) -> None:
    enh = f"{str(code)[0]}.{subject}.{detail}"
    text = "\r\n".join(
        f"{code}{'-' if i < len(lines) - 1 else ' '}{enh} {ln}" for i, ln in enumerate(lines)
    )
    p = parse_reply(text)
    assert (p.code, p.enhanced) == (code, enh)
    assert "\n" not in p.text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    v = CLF.classify(None, None, text)
    assert v.temporary in (True, False)


@settings(max_examples=100, deadline=None)
@given(REPLY_TEXT)
def test_deterministic(text: str) -> None:
    assert CLF.classify("gmail", None, text) == CLF.classify("gmail", None, text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(REPLY_TEXT, st.text(max_size=120)))
def test_text_rule_guards_never_change_a_result(text: str) -> None:
    """The literal-guarded evaluation of each text rule equals a plain search of its regex."""
    from engine.policy.classify import TEXT_RULES

    low = text.lower()
    for rule in TEXT_RULES:
        assert rule.matches(text, low) is (rule.pattern.search(text) is not None), rule.id


def _fragments() -> list[str]:
    """Literal pieces of every text rule (plain literals, prefixes, keys) and their cases."""
    from engine.policy.classify import TEXT_RULES

    out: set[str] = set()
    for rule in TEXT_RULES:
        g = rule.guard
        for lit in (*g.literal_list, *(p for p, _ in g.guarded), *g.key_list):
            out.update((lit, lit.upper(), lit.title()))
    return sorted(out)


RULE_TEXT = st.lists(
    st.one_of(st.sampled_from(_fragments()), st.text(max_size=8), st.sampled_from([" ", ": "])),
    max_size=8,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(RULE_TEXT, REPLY_TEXT), st.sampled_from(["", "2", "4", "5"]))
def test_one_pass_text_index_equals_rule_by_rule(text: str, cls: str) -> None:
    """The one-scan text stage picks exactly the rule a plain in-order search would."""
    from engine.policy.classify import _TEXT_INDEX, TEXT_RULES

    expected = next(
        (
            r
            for r in TEXT_RULES
            if (not cls or cls in r.classes) and r.pattern.search(text) is not None
        ),
        None,
    )
    got = _TEXT_INDEX.first(text, text.lower(), text.isascii(), cls)
    assert got is expected, (text, got and got.id, expected and expected.id)


FAST_SHAPE = st.builds(
    lambda pre, code, sep, cls, sub, det, rest: (
        f"{pre}{code}{sep}{cls}.{sub}.{det} {rest}" if cls else f"{pre}{code}{sep}{rest}"
    ),
    st.sampled_from(["", " ", "Diagnostic-Code: smtp; ", "smtp;", "diagnostic-code: ", "x; "]),
    st.integers(100, 699),
    st.sampled_from([" ", "-", ",", " #", "  "]),
    st.sampled_from(["", "2", "4", "5", "9"]),
    st.integers(0, 1200),
    st.integers(0, 1200),
    st.one_of(REPLY_TEXT, st.text(max_size=60)),
)


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(FAST_SHAPE, REPLY_TEXT, st.text(max_size=80)),
    st.one_of(st.none(), st.integers(-10, 1000)),
    st.one_of(st.none(), st.sampled_from(["5.1.1", "#4.7.0", "bogus"])),
)
def test_parse_fast_path_equals_general_path(
    text: str, code: int | None, enhanced: str | None
) -> None:
    # the single-line shortcut in parse_reply must give exactly what the general parser gives
    assert parse_reply(text, code, enhanced) == _parse_general(text, code, enhanced)
