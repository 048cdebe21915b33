"""The sandbox through real sockets: clients bind 127.0.0.2 / 127.0.0.3 on loopback."""

from __future__ import annotations

import json
import random
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InputError, QueryError
from engine.feedback import ArfReport, DsnReport, parse
from sim.sandbox.config import load_config
from sim.sandbox.server import SandboxThread
from sim.sandbox.store import MailStore

pytestmark = pytest.mark.integration

BIG = [10**6] * 3
OPEN_RATES = {"ip": BIG, "netblock": BIG, "dkim_domain": BIG, "spf_domain": BIG, "link_domain": BIG}
QUIET = {"unknown_fraction": 0.0, "full_fraction": 0.0}


def message(i: int, to: str, *, domain: str = "news.example.com", size: int = 0) -> bytes:
    m = EmailMessage()
    m["From"] = f"News <news@{domain}>"
    m["To"] = to
    m["Subject"] = f"Hello {i}"
    m["Message-ID"] = f"<{i}.{random.random()}@{domain}>"
    m["X-Inboxlab-Lane"] = "lifecycle"
    m.set_content(f"Hi {i}, see https://links.{domain}/x\n" + "x" * size)
    return m.as_bytes().replace(b"\n", b"\r\n")


def client(addr: tuple[str, int], source: str, *, tls: bool = False) -> smtplib.SMTP:
    s = smtplib.SMTP(addr[0], addr[1], source_address=(source, 0), timeout=10)
    s.ehlo("mta.example.com")
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
        s.ehlo("mta.example.com")
    return s


def transact(s: smtplib.SMTP, sender: str, rcpt: str, data: bytes) -> tuple[int, bytes]:
    """MAIL/RCPT/DATA by hand so every reply is visible; returns the first failing or final reply."""
    code, text = s.mail(sender)
    if code >= 400:
        return code, text
    code, text = s.rcpt(rcpt)
    if code >= 400:
        s.rset()
        return code, text
    return s.data(data)


def test_burst_gets_4728_on_one_ip_while_the_other_stays_clean(sandbox_factory) -> None:
    rates = {**OPEN_RATES, "ip": [5, 5, 5]}
    box = sandbox_factory({"spf": {"news.example.com": ["127.0.0.2", "127.0.0.3"]},
                           "providers": {"gmail": {"overrides": {"rates": rates, "mailboxes": QUIET},
                                                   "ip_age_days": {"127.0.0.2": 90, "127.0.0.3": 90}}}})
    addr = box.sandbox.addresses["gmail"]
    codes = []
    for i in range(8):
        s = client(addr, "127.0.0.2", tls=True)
        codes.append(transact(s, "b@news.example.com", f"u{i}@gmail.com", message(i, f"u{i}@gmail.com")))
        s.close()
    assert [c for c, _ in codes[:5]] == [250] * 5
    assert all(c == 421 and t.startswith(b"4.7.28") and b"127.0.0.2" in t for c, t in codes[5:])
    s = client(addr, "127.0.0.3", tls=True)
    assert transact(s, "b@news.example.com", "v@gmail.com", message(99, "v@gmail.com"))[0] == 250
    s.quit()


def test_unknown_mailbox_full_mailbox_and_mail_before_starttls(sandbox_factory) -> None:
    box = sandbox_factory({"spf": {"news.example.com": ["127.0.0.2"]},
                           "providers": {"gmail": {"ip_age_days": {"127.0.0.2": 90}}}})
    addr = box.sandbox.addresses["gmail"]
    s = client(addr, "127.0.0.2")
    code, text = s.mail("b@news.example.com")
    assert code == 421 and text.startswith(b"4.7.29")  # no STARTTLS yet
    s = client(addr, "127.0.0.2", tls=True)
    assert s.mail("b@news.example.com")[0] == 250
    code, text = s.rcpt("unknown-1@gmail.com")
    assert code == 550 and text.startswith(b"5.1.1 The email account that you tried to reach does not exist")
    code, text = s.rcpt("full-1@gmail.com")
    assert code == 452 and text.startswith(b"4.2.2")
    s.quit()


def _dkim_key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def test_unsigned_mail_to_gmail_is_5726_and_dkim_signed_mail_is_accepted(sandbox_factory) -> None:
    pem, record = _dkim_key()
    box = sandbox_factory({"dkim_keys": {"s1._domainkey.news.example.com": record},
                           "providers": {"gmail": {"overrides": {"mailboxes": QUIET},
                                                   "ip_age_days": {"127.0.0.2": 90}}}})
    addr = box.sandbox.addresses["gmail"]
    s = client(addr, "127.0.0.2", tls=True)
    raw = message(1, "bob@gmail.com")
    code, text = transact(s, "b@news.example.com", "bob@gmail.com", raw)
    assert code == 550 and text.startswith(b"5.7.26 This email has been blocked because the sender is unauthenticated")
    assert b"127.0.0.2" in text
    signature = dkim.sign(raw, b"s1", b"news.example.com", pem,
                          include_headers=[b"from", b"to", b"subject", b"message-id"])
    assert transact(s, "b@news.example.com", "bob@gmail.com", signature + raw)[0] == 250
    forged = signature + raw.replace(b"Hello 1", b"Hello 2")
    assert transact(s, "b@news.example.com", "bob@gmail.com", forged)[0] == 550
    s.quit()
    stored = box.sandbox.store.messages("gmail", "bob@gmail.com")
    assert len(stored) == 1 and b"DKIM-Signature" in stored[0]
    assert stored[0] == signature + raw


def test_young_ip_meets_its_daily_cap(sandbox_factory) -> None:
    box = sandbox_factory({"spf": {"news.example.com": ["127.0.0.2", "127.0.0.3"]},
                           "providers": {"yahoo": {
                               "overrides": {"young_ip": {"day0_cap": 3.0}, "rates": OPEN_RATES,
                                             "mailboxes": QUIET},
                               "ip_age_days": {"127.0.0.2": 0, "127.0.0.3": 90}}}})
    addr = box.sandbox.addresses["yahoo"]
    s = client(addr, "127.0.0.2")
    replies = [transact(s, "b@news.example.com", f"u{i}@yahoo.com", message(i, f"u{i}@yahoo.com"))
               for i in range(3)]
    assert [c for c, _ in replies] == [250] * 3
    code, text = s.mail("b@news.example.com")
    assert code == 421 and b"[TSS04] Messages from 127.0.0.2" in text
    s.close()
    s = client(addr, "127.0.0.3")
    assert all(transact(s, "b@news.example.com", f"w{i}@yahoo.com", message(i, "w"))[0] == 250
               for i in range(5))
    s.quit()


def test_complaint_comes_back_as_arf_to_the_feedback_receiver(sandbox_factory, feedback_sink) -> None:
    box = sandbox_factory({
        "time_scale": 600.0,
        "spf": {"news.example.com": ["127.0.0.2"]},
        "feedback": {"host": "127.0.0.1", "port": feedback_sink.port, "arf_to": "fbl@lab.test"},
        "providers": {"yahoo": {"overrides": {"feedback": {"complaint_delay_median_s": 300.0,
                                                           "complaint_delay_sigma": 0.0}}}}})
    addr = box.sandbox.addresses["yahoo"]
    s = client(addr, "127.0.0.2")
    raw = message(7, "complain-7@yahoo.com")
    sent_at = time.monotonic()
    assert transact(s, "b@news.example.com", "complain-7@yahoo.com", raw)[0] == 250
    s.quit()
    assert feedback_sink.arrived.wait(10), "no ARF report arrived"
    assert time.monotonic() - sent_at >= 0.4  # 300 model seconds at 600x
    arf = feedback_sink.messages[0]
    assert b"report-type=feedback-report" in arf
    assert b"Feedback-Type: abuse" in arf and b"Original-Rcpt-To: <complain-7@yahoo.com>" in arf
    assert b"Source-IP: 127.0.0.2" in arf and b"Original-Mail-From: <b@news.example.com>" in arf
    msgid = raw.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
    report = parse(arf)
    assert isinstance(report, ArfReport), report
    assert report.feedback_type == "abuse"
    rcpt_to = report.original_rcpt_to
    assert (rcpt_to if isinstance(rcpt_to, str) else rcpt_to[0]) == "complain-7@yahoo.com"
    assert report.source_ip == "127.0.0.2"
    assert report.original_message_id is not None
    assert report.original_message_id.strip("<>") == msgid.strip("<>")
    assert report.original_mail_from == "b@news.example.com"


def test_async_bounce_comes_back_as_a_dsn_the_parser_reads(sandbox_factory, feedback_sink) -> None:
    box = sandbox_factory({
        "time_scale": 600.0,
        "spf": {"news.example.com": ["127.0.0.2"]},
        "feedback": {"host": "127.0.0.1", "port": feedback_sink.port, "dsn_to": "dsn@lab.test"},
        "providers": {"yahoo": {"overrides": {"mailboxes": {"async_bounce_delay_s": 300.0}}}}})
    addr = box.sandbox.addresses["yahoo"]
    s = client(addr, "127.0.0.2")
    raw = message(8, "bounce-8@yahoo.com")
    sent_at = time.monotonic()
    code, _ = transact(s, "b@news.example.com", "bounce-8@yahoo.com", raw)
    assert code == 250  # accepted at SMTP ...
    s.quit()
    assert feedback_sink.arrived.wait(10), "no DSN arrived"  # ... bounced later
    assert time.monotonic() - sent_at >= 0.4  # 300 model seconds at 600x
    report = parse(feedback_sink.messages[0])
    assert isinstance(report, DsnReport), report
    assert [r.recipient for r in report.recipients] == ["bounce-8@yahoo.com"]
    (r,) = report.recipients
    assert r.action == "failed" and r.permanent
    assert r.status.startswith("5.") and len(r.status.split(".")) == 3
    msgid = raw.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
    assert (report.original_message_id or "").strip("<>") == msgid.strip("<>")
    assert feedback_sink.rcpts[0] == ["dsn@lab.test"]


def test_multi_recipient_transaction_gets_per_recipient_replies(sandbox_factory,
                                                               tmp_path: Path) -> None:
    box = sandbox_factory({"providers": {"gmail": {
        "overrides": {"mailboxes": QUIET}, "ip_age_days": {"127.0.0.2": 90}}},
        "spf": {"news.example.com": ["127.0.0.2"]}})
    addr = box.sandbox.addresses["gmail"]
    s = client(addr, "127.0.0.2", tls=True)
    assert s.mail("b@news.example.com")[0] == 250
    replies = {r: s.rcpt(r) for r in ("ann@gmail.com", "unknown-5@gmail.com", "bob@gmail.com")}
    assert replies["ann@gmail.com"][0] == 250 and replies["bob@gmail.com"][0] == 250
    code, text = replies["unknown-5@gmail.com"]
    assert code == 550 and text.startswith(b"5.1.1 The email account that you tried to reach")
    assert s.data(message(5, "ann@gmail.com, bob@gmail.com"))[0] == 250
    s.quit()
    box.stop()
    home = tmp_path / "sb" / "sandbox"
    store = MailStore(home)  # read back from disk, as another process would
    assert store.count("gmail", "ann@gmail.com") == 1
    assert store.count("gmail", "bob@gmail.com") == 1
    assert store.messages("gmail", "ann@gmail.com") == store.messages("gmail", "bob@gmail.com")
    assert b"Subject: Hello 5" in store.get("gmail", "Ann@Gmail.com", 0)
    assert store.mailboxes("gmail") == {"ann@gmail.com": 1, "bob@gmail.com": 1}
    assert store.count("gmail", "unknown-5@gmail.com") == 0
    rows = [json.loads(x) for x in (home / "events.jsonl").read_text().splitlines()]
    got = sorted((r["event"], r["recipient"], r["smtp_code"], json.loads(r["detail"])["stage"])
                 for r in rows)
    assert got == [("bounced", "unknown-5@gmail.com", 550, "rcpt"),
                   ("delivered", "ann@gmail.com", 250, "data"),
                   ("delivered", "bob@gmail.com", 250, "data")]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def test_fixed_ports_from_the_config_file(sandbox_factory) -> None:
    p1, p2 = _free_ports(2)
    box = sandbox_factory({"providers": {"generic": {"port": p1, "tls": False},
                                         "yahoo": {"port": p2}}})
    assert box.sandbox.addresses == {"generic": ("127.0.0.1", p1), "yahoo": ("127.0.0.1", p2)}
    for port, banner in ((p1, b"mx.example.net"), (p2, b"")):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            greeting = sock.recv(1024)
            assert greeting.startswith(b"220 ") and banner in greeting


def test_a_taken_fixed_port_is_a_clear_error(tmp_path: Path) -> None:
    from tests.integration.conftest import write_config

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path / "c.toml", {"providers": {"generic": {"port": port}}})
        box = SandboxThread(load_config(cfg), tmp_path / "h")
        with pytest.raises(InputError, match=f"port {port}"):
            box.start()
        box.stop()


def _fault_run(sandbox_factory, seed: int, name: str) -> list[str]:
    box = sandbox_factory({"providers": {"generic": {
        "tls": False, "overrides": {"mailboxes": QUIET},
        "faults": {"seed": seed, "disconnect_after_mail": 0.3, "disconnect_mid_data": 0.3}}}},
        name=name)
    addr = box.sandbox.addresses["generic"]
    pattern = []
    for i in range(12):
        try:
            s = client(addr, "127.0.0.2")
            code, _ = transact(s, "b@news.example.com", f"u{i}@example.net", message(i, "u"))
            pattern.append(str(code))
            s.close()
        except (smtplib.SMTPServerDisconnected, ConnectionError):
            pattern.append("drop")
    return pattern


def test_fault_injection_reproduces_with_a_seed(sandbox_factory) -> None:
    a = _fault_run(sandbox_factory, 5, "a")
    b = _fault_run(sandbox_factory, 5, "b")
    c = _fault_run(sandbox_factory, 6, "c")
    assert a == b
    assert "drop" in a and "250" in a
    assert a != c


def test_garbage_input_never_crashes_the_server(sandbox_factory) -> None:
    box = sandbox_factory({"providers": {"generic": {"tls": True,
                                                     "overrides": {"max_message_bytes": 4096,
                                                                   "mailboxes": QUIET}}}})
    addr = box.sandbox.addresses["generic"]
    rng = random.Random(1)
    payloads = [
        b"\x00\xff\xfe garbage\r\n", b"MAIL FROM:<<<>>>\r\n", b"RCPT TO:<a@b>\r\n",
        b"EHLO x\r\nMAIL FROM:<a@b.com> SIZE=abc\r\nRCPT TO:<not an address>\r\nDATA\r\n",
        b"A" * 5000 + b"\r\n", b"EHLO x\r\nSTARTTLS\r\n\x16\x03\x01garbage-tls\r\n",
        bytes(rng.randrange(256) for _ in range(3000)),
        b"EHLO x\r\nMAIL FROM:<a@b.com>\r\nRCPT TO:<c@example.net>\r\nDATA\r\npartial",
    ]
    for data in payloads:
        with socket.create_connection(addr, timeout=5, source_address=("127.0.0.3", 0)) as sock:
            sock.recv(1024)
            sock.sendall(data)
            sock.settimeout(0.5)
            try:
                while sock.recv(4096):
                    pass
            except (TimeoutError, ConnectionError):
                pass
    s = client(addr, "127.0.0.2")
    code, text = transact(s, "b@news.example.com", "ok@example.net", message(1, "x", size=8000))
    assert code == 552 and text.startswith(b"5.3.4 Message size exceeds fixed limit")
    assert transact(s, "b@news.example.com", "ok@example.net", message(2, "x"))[0] == 250
    s.quit()


def test_events_and_store_are_written(sandbox_factory, tmp_path: Path) -> None:
    box = sandbox_factory({"providers": {"generic": {"tls": False,
                                                     "overrides": {"mailboxes": QUIET}}}})
    addr = box.sandbox.addresses["generic"]
    s = client(addr, "127.0.0.2")
    raw = message(3, "a@example.net")
    assert transact(s, "b@news.example.com", "a@example.net", raw)[0] == 250
    assert transact(s, "b@news.example.com", "a@example.net", raw)[0] == 250  # duplicate
    assert transact(s, "b@news.example.com", "unknown-2@example.net", raw)[0] == 550
    s.quit()
    box.stop()
    home = tmp_path / "sb" / "sandbox"
    rows = [json.loads(x) for x in (home / "events.jsonl").read_text().splitlines()]
    kinds = [(r["event"], r["recipient"], r["smtp_code"], r["source_ip"]) for r in rows]
    assert ("delivered", "a@example.net", 250, "127.0.0.2") in kinds
    assert ("bounced", "unknown-2@example.net", 550, "127.0.0.2") in kinds
    assert all(r["source"] == "sandbox" and r["provider"] == "generic" for r in rows)
    store = MailStore(home)
    assert store.count("generic", "a@example.net") == 2
    assert store.messages("generic", "a@example.net") == [raw, raw]
    msgid = raw.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
    assert [e.message_id for e in store.index("generic", "a@example.net")] == [msgid] * 2
    stats = json.loads((home / "stats.json").read_text())
    assert stats["generic"]["duplicates"] == 1 and stats["generic"]["accepted"] == 2


# --- the per-message path's pieces, checked against the stdlib and dkimpy ---------------------

_NAMES = st.sampled_from(["From", "from", "FROM", "Message-ID", "Message-Id", "X-Inboxlab-Lane",
                          "List-Unsubscribe", "DKIM-Signature", "Subject", "To", "X-Other"])
_VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)


@given(st.lists(st.tuples(_NAMES, _VALUES, st.booleans(), _VALUES), max_size=8),
       st.sampled_from([b"\r\n", b"\n"]))
@settings(max_examples=300, deadline=None)
def test_header_scan_reads_what_the_stdlib_parser_reads(fields, eol) -> None:
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    from sim.sandbox.messages import scan_headers

    lines = []
    for name, value, folded, more in fields:
        lines.append(f"{name}: {value}".encode())
        if folded:
            lines.append(f"\t{more}".encode())
    head = eol.join(lines)
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n")
    got = scan_headers(head)
    for name in ("from", "message-id", "x-inboxlab-lane", "list-unsubscribe", "dkim-signature"):
        want = parsed.get(name)
        assert got.get(name) == (None if want is None else str(want)), (name, head)


@given(st.sampled_from(["News <news@a.example>", "<news@a.example>", "news@a.example",
                        '"News, Daily" <news@a.example>', "news@a.example (News)",
                        "News\r\n <news@a.example>", "a <b> <c@d.example>", "", "<>",
                        "undisclosed", "x@y.example, z@w.example"]))
def test_from_address_matches_parseaddr(value: str) -> None:
    from email.utils import parseaddr

    from sim.sandbox.messages import address_of

    assert address_of(value) == parseaddr(value)[1]


def test_dkim_cache_misses_when_the_key_record_changes() -> None:
    from sim.sandbox import messages

    pem, record = _dkim_key()
    _, other = _dkim_key()
    raw = message(1, "bob@gmail.com")
    signed = dkim.sign(raw, b"s1", b"news.example.com", pem,
                       include_headers=[b"from", b"to", b"subject", b"message-id"]) + raw
    name = "s1._domainkey.news.example.com"
    assert messages.dkim_domain(signed, {name: record}) == "news.example.com"
    assert messages.dkim_domain(signed, {name: record}) == "news.example.com"  # cached
    assert messages.dkim_domain(signed, {name: other}) is None  # rotated key: verified again
    assert messages.dkim_domain(signed, {}) is None
    assert messages.dkim_domain(signed.replace(b"Hello 1", b"Hello 2"), {name: record}) is None
    assert messages.dkim_domain(raw, {name: record}) is None  # unsigned


def test_store_appends_across_restarts_and_reads_back(tmp_path: Path) -> None:
    first = MailStore(tmp_path)
    for i in range(3):
        first.put("gmail", ("Ann@Example.net",), f"m{i}".encode(), f"<{i}@x>")
    first.put("gmail", ("a/b@example.net", "ann@example.net"), b"shared", "<s@x>")
    first.close()
    again = MailStore(tmp_path)  # a restarted sandbox appends after what is there
    again.put("gmail", ("ann@example.net",), b"m3", "<3\t\r\n@x>")
    again.put("yahoo", ("ann@example.net",), b"elsewhere")
    again.close()
    store = MailStore(tmp_path)
    assert store.messages("gmail", "ANN@example.net") == [b"m0", b"m1", b"m2", b"shared", b"m3"]
    assert store.messages("gmail", "a/b@example.net") == [b"shared"]
    assert store.mailboxes("gmail") == {"ann@example.net": 5, "a_b@example.net": 1}
    assert store.count("gmail") == 6 and store.count("yahoo", "ann@example.net") == 1
    assert store.get("gmail", "ann@example.net", -1) == b"m3"
    assert store.index("gmail", "ann@example.net")[-1].message_id == "<3   @x>"
    assert store.providers() == ["gmail", "yahoo"]
    assert (tmp_path / "gmail" / "mail.dat").read_bytes() == b"m0m1m2sharedm3"  # shared once
    with pytest.raises(QueryError, match="no message 5"):
        store.get("gmail", "ann@example.net", 5)
    assert store.count("outlook", "ann@example.net") == 0
    assert store.export_eml("gmail", tmp_path / "out") == 6
    assert (tmp_path / "out" / "ann@example.net" / "4.eml").read_bytes() == b"shared"
    assert (tmp_path / "out" / "a_b@example.net" / "1.eml").read_bytes() == b"shared"


def test_store_ignores_a_torn_last_index_line_and_refuses_a_bad_one(tmp_path: Path) -> None:
    store = MailStore(tmp_path)
    store.put("gmail", ("a@example.net",), b"one")
    store.close()
    index = tmp_path / "gmail" / "index.tsv"
    with index.open("ab") as fh:
        fh.write(b"a@example.net\t3\t")  # a writer caught mid-append
    assert store.messages("gmail", "a@example.net") == [b"one"]
    index.write_bytes(b"a@example.net\tx\t3\t\n")
    with pytest.raises(QueryError, match="line 1: not a mail index entry"):
        store.count("gmail")
    index.write_bytes(b"a@example.net\t0\t99\t\n")
    with pytest.raises(QueryError, match="cut short"):
        store.messages("gmail", "a@example.net")


def test_event_rows_are_valid_events(sandbox_factory, tmp_path: Path) -> None:
    from engine.events import COLUMN_NAMES, Event

    box = sandbox_factory({"providers": {"generic": {"tls": False,
                                                     "overrides": {"mailboxes": QUIET}}}})
    addr = box.sandbox.addresses["generic"]
    s = client(addr, "127.0.0.2")
    for i in range(3):
        assert transact(s, "b@news.example.com", f"a{i}@example.net", message(i, "x"))[0] == 250
    assert transact(s, "b@news.example.com", "unknown-9@example.net", message(9, "x"))[0] == 550
    s.quit()
    # the stored mail is on disk as soon as the client has its reply to the next command
    on_disk = MailStore(tmp_path / "sb" / "sandbox")
    assert on_disk.count("generic") == 3
    assert on_disk.mailboxes("generic") == {f"a{i}@example.net": 1 for i in range(3)}
    box.stop()
    lines = (tmp_path / "sb" / "sandbox" / "events.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        assert tuple(row) == COLUMN_NAMES
        ev = Event.from_row(row)
        assert ev.source == "sandbox" and ev.recipient_domain == "example.net"
    assert sorted(r["event"] for r in rows) == ["bounced", "delivered", "delivered", "delivered"]
