"""Targeted behaviour of engine.feedback: lenient DSN fields, plain notices, ARF, helpers."""

from __future__ import annotations

import pytest

from engine.feedback import ArfReport, DsnReport, Unknown, parse
from engine.feedback.fields import clean_address, find_status, normalise_status


def _dsn(report_body: str, *, extra_parts: str = "", headers: str = "") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\n"
        "To: bounce@sender.example\n"
        f"{headers}"
        "Subject: report\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nhuman text\n\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        f"{report_body}\n"
        f"{extra_parts}"
        "--B--\n"
    ).encode()


def _one(result: object) -> DsnReport:
    assert isinstance(result, DsnReport), result
    return result


def test_status_comment_and_prefixes_are_stripped() -> None:
    r = _one(parse(_dsn(
        "Reporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: RFC822; <Some.One@Example.org>\n"
        "Action: Failed (permanent)\n"
        "Status: 5.1.1 (bad destination mailbox)\n"
        "Diagnostic-Code: SMTP; 550 5.1.1 no such user\n"
    )))
    (rcpt,) = r.recipients
    assert rcpt.recipient == "Some.One@Example.org"
    assert (rcpt.action, rcpt.status, rcpt.permanent) == ("failed", "5.1.1", True)
    assert rcpt.diagnostic == "550 5.1.1 no such user"


def test_failed_with_4xx_status_is_permanent_and_delayed_never_is() -> None:
    r = _one(parse(_dsn(
        "Reporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: rfc822;a@example.org\nAction: failed\nStatus: 4.0.0\n\n"
        "Final-Recipient: rfc822;b@example.org\nAction: delayed\nStatus: 5.0.0\n"
    )))
    a, b = r.recipients
    assert (a.status, a.permanent) == ("4.0.0", True)
    assert (b.action, b.permanent) == ("delayed", False)


def test_missing_blank_lines_and_reordered_fields_still_split_recipients() -> None:
    r = _one(parse(_dsn(
        "Reporting-MTA: dns; mx.example.org\n"
        "Final-Recipient: rfc822;a@example.org\nOriginal-Recipient: rfc822;alias@example.org\n"
        "Action: failed\nStatus: 5.1.1\n"
        "Final-Recipient: b@example.org\nAction: delayed\nStatus: 4.2.2\n"
        "Original-Recipient: rfc822;c-orig@example.org\nFinal-Recipient: c@example.org\n"
        "Action: failed\nStatus: 5.2.1\n"
    )))
    got = [(x.recipient, x.action, x.status, x.original_recipient) for x in r.recipients]
    assert got == [
        ("a@example.org", "failed", "5.1.1", "alias@example.org"),
        ("b@example.org", "delayed", "4.2.2", None),
        ("c@example.org", "failed", "5.2.1", "c-orig@example.org"),
    ]
    assert r.reporting_mta == "mx.example.org"


def test_folded_diagnostic_is_unfolded() -> None:
    r = _one(parse(_dsn(
        "Final-Recipient: rfc822;a@example.org\nAction: failed\nStatus: 5.7.1\n"
        "Diagnostic-Code: smtp; 550-5.7.1 first line\n\t550 5.7.1 second   line\n"
    )))
    assert r.recipients[0].diagnostic == "550-5.7.1 first line 550 5.7.1 second line"


def test_missing_status_is_taken_from_the_diagnostic_and_missing_action_from_status() -> None:
    r = _one(parse(_dsn(
        "Final-Recipient: rfc822;a@example.org\nDiagnostic-Code: smtp; 452 4.2.2 over quota\n"
    )))
    assert (r.recipients[0].status, r.recipients[0].action) == ("4.2.2", "delayed")


def test_original_message_id_from_headers_only_part() -> None:
    part = (
        "--B\nContent-Type: text/rfc822-headers\n\n"
        "Return-Path: <bounce+1=a=example.org@sender.example>\n"
        "To: a@example.org\nMessage-ID:\n  <abc@sender.example>\n\n"
    )
    r = _one(parse(_dsn(
        "Final-Recipient: rfc822;a@example.org\nAction: failed\nStatus: 5.0.0\n",
        extra_parts=part,
    )))
    assert r.original_message_id == "<abc@sender.example>"
    assert r.original_return_path == "bounce+1=a=example.org@sender.example"


def test_eight_bit_headers_do_not_leak_surrogates() -> None:
    raw = _dsn(
        "Final-Recipient: rfc822;a@example.org\nAction: failed\nStatus: 5.0.0\n",
        headers="X-Weird: caf\xe9 \xff\n",
    ).replace("caf\xe9 \xff".encode(), b"caf\xe9 \xff")
    r = parse(raw)
    r.as_dict()  # must be JSON-encodable text
    assert isinstance(r, DsnReport)


@pytest.mark.parametrize(
    ("body", "status", "action"),
    [
        ("<a@example.org>:\nRemote host said: 550 5.1.1 unknown\n", "5.1.1", "failed"),
        ("<a@example.org>:\nRemote host said: 554 no thanks\n", "5.0.0", "failed"),
        ("<a@example.org>:\nRemote host said: 421 busy\n", "4.0.0", "failed"),
        ("<a@example.org>:\nconnection refused\n", "5.0.0", "failed"),
    ],
)
def test_qmail_status_is_quoted_or_derived(body: str, status: str, action: str) -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example.org\nTo: bounce@sender.example\nSubject: failure notice\n\n"
        "Hi. This is the qmail-send program at mx.example.org.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
        f"{body}\n"
    )
    r = _one(parse(raw))
    assert [(x.recipient, x.status, x.action) for x in r.recipients] == [
        ("a@example.org", status, action)
    ]


def test_plain_delay_notice_is_delayed() -> None:
    raw = (
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n"
        "To: bounce@sender.example\nSubject: Delivery Status Notification (Delay)\n\n"
        "Delivery to the following recipient has been delayed:\n\n     late@example.net\n\n"
        "Message will be retried for 2 more day(s)\n"
    )
    (rcpt,) = _one(parse(raw)).recipients
    assert (rcpt.recipient, rcpt.action, rcpt.status, rcpt.permanent) == (
        "late@example.net", "delayed", "4.0.0", False)


def test_sender_address_is_not_taken_for_a_recipient() -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example.org\nTo: <bounce+9@sender.example>\n"
        "Subject: Undelivered Mail Returned to Sender\n\n"
        "This is the mail system at host mx.example.org.\n\n"
        "<bounce+9@sender.example>: hmm\n"
        "<real@example.org>: host mx said: 550 5.1.1 unknown\n"
    )
    assert [x.recipient for x in _one(parse(raw)).recipients] == ["real@example.org"]


def test_each_plain_recipient_keeps_its_own_code() -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example.org\nTo: bounce@sender.example\nSubject: x\n\n"
        "This is the mail system at host mx.example.org.\n\n"
        "<a@example.org>: host mx said: 552 5.2.2 full\n"
        "<b@example.org>: unknown user\n"
    )
    got = [(x.recipient, x.status) for x in _one(parse(raw)).recipients]
    assert got == [("a@example.org", "5.2.2"), ("b@example.org", "5.0.0")]


def test_arf_single_and_several_rcpt_to() -> None:
    def arf(rcpts: str) -> bytes:
        return (
            "From: fbl@isp.example\nTo: fbl@sender.example\nSubject: report\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="X"\n\n'
            "--X\nContent-Type: text/plain\n\nreport\n"
            "--X\nContent-Type: message/feedback-report\n\n"
            f"feedback-type: Abuse\nUser-Agent: t/1\nVersion: 1\n{rcpts}"
            "Source-IP: 192.0.2.1\n\n--X--\n"
        ).encode()

    one = parse(arf("Original-Rcpt-To: <x@isp.example>\n"))
    many = parse(arf("Original-Rcpt-To: x@isp.example\nOriginal-Rcpt-To: y@isp.example\n"))
    none = parse(arf(""))
    assert isinstance(one, ArfReport) and isinstance(many, ArfReport)
    assert isinstance(none, ArfReport)
    assert one.original_rcpt_to == "x@isp.example" and one.feedback_type == "abuse"
    assert many.original_rcpt_to == ["x@isp.example", "y@isp.example"]
    assert none.original_rcpt_to is None and none.source_ip == "192.0.2.1"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty input"),
        (b"   \r\n\n", "empty input"),
        (b"\x00\x01\x02PK\x03\x04" * 40, "binary data, not a mail message"),
        (b"just some words\nand more\n", "no mail headers at the start of the input"),
    ],
)
def test_unreadable_input_is_unknown_with_reason(data: bytes, reason: str) -> None:
    r = parse(data)
    assert isinstance(r, Unknown) and r.reason == reason


def test_find_status_prefers_pairs_and_ignores_ip_addresses() -> None:
    assert find_status("host 192.168.5.1.1 said 550 5.1.1 nope") == "5.1.1"
    assert find_status("connect to 10.4.4.7 failed") is None
    assert find_status("said: 452 mailbox busy") == "4.0.0"
    assert find_status("(#5.1.1)") == "5.1.1"
    assert normalise_status("4.4.7 (delivery time expired)") == "4.4.7"


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("rfc822; <a@b.example>", "a@b.example"),
        ("a@b.example", "a@b.example"),
        ("RFC822;a@b.example (comment)", "a@b.example"),
        ("utf-8; jos\\x{E9}@b.example", "jos\u00e9@b.example"),
        ("<mailto:a@b.example>", "a@b.example"),
    ],
)
def test_clean_address(value: str, want: str) -> None:
    assert clean_address(value) == want


def test_a_status_cut_short_falls_back_to_the_diagnostic_or_its_class() -> None:
    # found by hypothesis: a newline inside "5.1.1" left the status "5"
    from engine.feedback import parse as parse_message

    def dsn(status: str, diag: str) -> bytes:
        return (
            "From: MAILER-DAEMON@mx.example\nTo: b@sender.example\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
            "--b\nContent-Type: text/plain\n\nfailed\n\n--b\n"
            "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
            f"Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: {status}\n"
            f"{diag}\n--b--\n").encode()

    with_diag = parse_message(dsn("5\n .1.1", "Diagnostic-Code: smtp; 550 5.1.1 no such user"))
    assert with_diag.recipients[0].status == "5.1.1"
    bare = parse_message(dsn("4", ""))
    assert bare.recipients[0].status == "4.0.0" and bare.recipients[0].permanent
