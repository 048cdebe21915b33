"""Replies from receivers with no profile: the text rules and registry must hold on their own.

Wordings as these MTAs and providers print them (public bounce samples and documentation);
each is classified with provider=None so no profile rule can help.
"""

from __future__ import annotations

import pytest

from engine.policy.classify import Classifier
from engine.profiles import load_profiles, load_replies

CLF = Classifier(load_profiles())

CASES: list[tuple[str, str, str]] = [
    # Yandex
    ("550 5.7.1 No such user!", "mailbox_unknown", "suppress_recipient"),
    ("552 5.2.2 Mailbox size limit exceeded", "mailbox_full", "retry_later"),
    (
        "554 5.7.1 [2] Message rejected under suspicion of SPAM; https://ya.cc/1IrBc 1234",
        "content_spam",
        "fix_content",
    ),
    (
        "451 4.7.1 Sorry, the service is currently unavailable. Please come back later. 1234",
        "connection",
        "retry_soon",
    ),
    # mail.ru
    (
        "550 Message was not accepted -- invalid mailbox.  Local mailbox nobody@mail.ru is unavailable: account is disabled",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    (
        "550 spam message rejected. Please visit http://help.mail.ru/notspam-support/id?c=abc or report details to abuse@corp.mail.ru. Error code: 1234.",
        "content_spam",
        "fix_content",
    ),
    ("421 4.7.0 Too many messages from your IP. Try again later", "throttled", "retry_slow_down"),
    # QQ / 163
    ("550 Mailbox not found or access denied", "mailbox_unknown", "suppress_recipient"),
    ("550 Domain frequency limited", "throttled", "retry_slow_down"),
    (
        "550 Connection frequency limited. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000722",
        "throttled",
        "retry_slow_down",
    ),
    (
        "554 DT:SPM 163 mx14,QMCowECpvkJ3 1234, please see http://mail.163.com/help/help_spam_16.htm?ip=1.2.3.4",
        "content_spam",
        "fix_content",
    ),
    ("550 User not found: nobody@163.com", "mailbox_unknown", "suppress_recipient"),
    # T-Online
    (
        "554 IP=192.0.2.10 - A problem occurred. (Ask your postmaster for help or to contact tosa@rx.t-online.de to clarify.) (BL)",
        "reputation_block",
        "pause_pool",
    ),
    ("550 5.1.1 <nobody@t-online.de> user does not exist", "mailbox_unknown", "suppress_recipient"),
    (
        "550 message has been rejected due to spam or virus classification",
        "content_spam",
        "fix_content",
    ),
    # Libero / Italiaonline
    ("550 5.2.1 <nobody@libero.it> Mailbox disabled", "mailbox_unknown", "suppress_recipient"),
    ("554 5.7.1 Spamhaus PBL listed IP 192.0.2.10", "dnsbl_listed", "pause_pool"),
    # Zimbra / Postfix-based
    (
        "552 5.2.2 <nobody@example.com>: Recipient address rejected: Mailbox is full",
        "mailbox_full",
        "retry_later",
    ),
    ("451 4.3.5 Server configuration problem", "connection", "retry_soon"),
    # Cisco IronPort
    (
        "554 5.7.1 Message rejected due to reputation - Your IP 192.0.2.10 is blocked",
        "reputation_block",
        "pause_pool",
    ),
    ("550 #5.1.0 Address rejected.", "mailbox_unknown", "suppress_recipient"),
    ("452 Too many recipients received this hour", "throttled", "retry_soon"),
    (
        "554 Message refused by Cisco IronPort policy: message content rejected",
        "content_spam",
        "fix_content",
    ),
    # Barracuda ESG
    (
        "554 Service unavailable; Client host [192.0.2.10] blocked using Barracuda Reputation; http://www.barracudanetworks.com/reputation/?r=1&ip=192.0.2.10",
        "dnsbl_listed",
        "pause_pool",
    ),
    (
        "550 permanent failure for one or more recipients (nobody@example.com:blocked)",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    ("554 5.7.1 Message rejected: policy violation", "policy", "dead_letter"),
    # Google Workspace custom rule
    (
        "550 5.7.1 This message violates example.com email policy. - gcdp <sessionid> - gsmtp",
        "policy",
        "dead_letter",
    ),
    # Fastmail
    (
        "550 5.1.1 <nobody@fastmail.com>: Recipient address rejected: User unknown in virtual mailbox table",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    (
        "451 4.7.1 <nobody@fastmail.com>: Recipient address rejected: greylisted",
        "greylist",
        "retry_soon",
    ),
    # Exim
    (
        # a callout to OUR Return-Path failed: fix the sending domain, keep the recipient
        "550-Verification failed for <bounce@example.com>\n550-Unrouteable address\n550 Sender verify failed",
        "policy",
        "fix_auth",
    ),
    ("550 Administrative prohibition", "policy", "dead_letter"),
    ("451 Temporary local problem - please try later", "connection", "retry_soon"),
    (
        "550 rejected because 192.0.2.10 is in a black list at zen.spamhaus.org",
        "dnsbl_listed",
        "pause_pool",
    ),
    # Sendmail / qmail
    ("553 5.3.0 <nobody@example.com>... No such user", "mailbox_unknown", "suppress_recipient"),
    ("452 4.4.5 Insufficient disk space; try again later", "connection", "retry_soon"),
    (
        "554 5.4.6 Too many hops 26 (25 max): from <a@b.example> via localhost, to <c@d.example>",
        "connection",
        "dead_letter",
    ),
    ("451 qq temporary problem (#4.3.0)", "connection", "retry_soon"),
    (
        "552 sorry, that message size exceeds my databytes limit (#5.3.4)",
        "message_too_large",
        "dead_letter",
    ),
    # DMARC / SPF / PTR / TLS wordings of various MTAs
    ("550 5.7.1 Email rejected per DMARC policy for example.com", "auth_failure", "fix_auth"),
    ("550 5.7.23 SPF validation failed", "auth_failure", "fix_auth"),
    ("550 5.7.25 Reverse DNS validation failed", "auth_failure", "fix_auth"),
    (
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.10]",
        "auth_failure",
        "fix_auth",
    ),
    ("530 5.7.0 TLS required", "tls_required", "fix_auth"),
    ("454 4.7.0 TLS not available due to local problem", "connection", "retry_soon"),
    (
        "550 5.7.1 Encryption required for requested authentication mechanism",
        "tls_required",
        "fix_auth",
    ),
    # quota variants
    ("552 5.2.2 Quota exceeded (mailbox for user is full)", "mailbox_full", "retry_later"),
    ("452 4.2.2 Over quota", "mailbox_full", "retry_later"),
    (
        "550 5.2.2 The email account that you tried to reach is over quota",
        "mailbox_full",
        "retry_later",
    ),
    # relay
    ("550 5.7.1 Relaying denied", "relay_denied", "dead_letter"),
    ("554 5.7.1 <nobody@example.net>: Relay access denied", "relay_denied", "dead_letter"),
    ("551 5.1.1 User not local; please try <forward@example.org>", "relay_denied", "dead_letter"),
    # size
    ("552 5.3.4 Error: message file too big", "message_too_large", "dead_letter"),
    ("552 Message size exceeds maximum permitted", "message_too_large", "dead_letter"),
    # greylist variants
    ("451 4.7.1 Please try again later (greylisting)", "greylist", "retry_soon"),
    (
        "450 4.7.1 Greylisted, see http://postgrey.schweikert.ch/help/example.com.html",
        "greylist",
        "retry_soon",
    ),
    (
        "451 4.7.1 Service unavailable - try again later; you are not yet authorized to deliver mail",
        "greylist",
        "retry_soon",
    ),
    # DNS
    (
        "553 5.1.8 <bounce@nonexistent.example>... Domain of sender address bounce@nonexistent.example does not exist",
        "dns_failure",
        "fix_auth",
    ),
    ("451 4.4.3 Temporary lookup failure", "dns_failure", "retry_soon"),
    (
        "550 5.1.2 Host unknown (Name server: nonexistent.example: host not found)",
        "dns_failure",
        "suppress_recipient",
    ),
    # rate
    (
        "421 4.7.0 Try again later, closing connection. (EHLO) rate limited",
        "throttled",
        "retry_slow_down",
    ),
    (
        "450 4.7.1 Client host rejected: too many connections, slow down",
        "throttled",
        "retry_slow_down",
    ),
]


@pytest.mark.parametrize(("text", "category", "action"), CASES, ids=[c[0][:40] for c in CASES])
def test_unprofiled_receivers(text: str, category: str, action: str) -> None:
    v = CLF.classify(None, None, text)
    assert (v.category, v.action) == (category, action), (v.rule, v.reasons)


# Follow-up probe: real wordings of receivers without a profile (Cisco Secure Email,
# Barracuda, Trend Micro, Zoho, ProtonMail, GoDaddy, Rackspace, Zimbra, Exim, Postfix,
# Exchange Online), each checked against the reply-vocabulary with no provider given.
PROBE_CASES: list[tuple[str, str, str]] = [
    (
        "421 Too many concurrent SMTP connections; please try again later.",
        "connection",
        "retry_slow_down",
    ),
    (
        "421 RP-002 (BAY004-MC1F43) Unfortunately, some messages from 192.0.2.1 weren't sent. Please try again. We have limits for how many messages can be sent per hour and per day.",
        "throttled",
        "retry_slow_down",
    ),
    (
        "554 Your access to this mail system has been rejected due to the sending MTA's poor reputation. If you believe that this failure is in error, please contact the intended recipient via alternate means.",
        "reputation_block",
        "pause_pool",
    ),
    (
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using b.barracudacentral.org; http://www.barracudanetworks.com/reputation/?pr=1&ip=192.0.2.1",
        "dnsbl_listed",
        "pause_pool",
    ),
    (
        "550 permanent failure for one or more recipients (nobody@example.com:550 5.1.1 User unknown)",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    (
        "554 5.7.1 Message blocked due to spam content in the message.",
        "content_spam",
        "fix_content",
    ),
    (
        "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using Trend Micro Email Reputation database. Please see http://www.mail-abuse.com/cgi-bin/lookup?ip_address=192.0.2.1",
        "dnsbl_listed",
        "pause_pool",
    ),
    (
        "451 4.7.1 Service unavailable; client [192.0.2.1] blocked using Trend Micro RBL+. Please see http://www.mail-abuse.com/cgi-bin/lookup?ip_address=192.0.2.1",
        "dnsbl_listed",
        "pause_pool",
    ),
    (
        "550 5.1.1 User does not exist - <nobody@example.com>",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    (
        "541 5.4.1 Your message to <nobody@example.com> was classified as SPAM. Please add more content, cut down on HTML links, use fewer naughty words etc.",
        "content_spam",
        "fix_content",
    ),
    ("554 5.7.7 Email policy violation detected", "policy", "dead_letter"),
    ("550 5.1.1 Address does not exist", "mailbox_unknown", "suppress_recipient"),
    ("552 5.2.0 Message rejected for spam or virus content", "content_spam", "fix_content"),
    (
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1",
        "dnsbl_listed",
        "pause_pool",
    ),
    ("452 4.2.2 Mailbox full", "mailbox_full", "retry_later"),
    ("554 SMTP synchronization error", "policy", "dead_letter"),
    ("550 Access denied - Invalid HELO name (See RFC2821 4.1.1.1)", "auth_failure", "fix_auth"),
    (
        "450 4.1.8 <bounce@nonexistent.example>: Sender address rejected: Domain not found",
        "dns_failure",
        "fix_auth",
    ),
    (
        "550 5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]",
        "auth_failure",
        "fix_auth",
    ),
    (
        "452 4.2.2 <user@example.com>: Recipient address rejected: Mailbox is full",
        "mailbox_full",
        "retry_later",
    ),
    (
        "550 5.7.1 Message rejected due to: SPF fail - not authorized. Please see http://www.openspf.net/Why?s=mfrom;id=bounce@example.com;ip=192.0.2.1;r=mx.example.net",
        "auth_failure",
        "fix_auth",
    ),
    (
        "550 5.7.1 Unauthenticated email from example.com is not accepted due to domain's DMARC policy. Please contact the administrator of example.com domain if this was a legitimate mail.",
        "auth_failure",
        "fix_auth",
    ),
    ("550 5.7.1 DMARC policy violation", "auth_failure", "fix_auth"),
    (
        "550 5.7.1 Mail appears to be unsolicited -- send error reports to postmaster@example.net",
        "content_spam",
        "fix_content",
    ),
    ("550 5.7.1 Sender is on user denylist", "policy", "dead_letter"),
    ("550 5.7.350 Remote server returned message detected as spam", "content_spam", "fix_content"),
    ("552 5.3.4 Message size exceeds maximum permitted", "message_too_large", "dead_letter"),
    ("Connection timed out after 300 seconds", "connection", "retry_soon"),
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.1]", "reputation_block", "pause_pool"),
    (
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        "throttled",
        "retry_slow_down",
    ),
    ("550 5.7.1 Message rejected as spam by Content Filtering.", "content_spam", "fix_content"),
    (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    (
        "450 4.2.0 <user@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html",
        "greylist",
        "retry_soon",
    ),
    (
        "553 5.3.0 <user@example.net>... DNSBL:RBL 521< 192.0.2.1 >_is_blocked.For assistance forward this error to abuse_rbl@abuse-att.net",
        "dnsbl_listed",
        "pause_pool",
    ),
    (
        "550 5.7.25 [192.0.2.1] The IP address sending this message does not have a PTR record setup, or the corresponding forward DNS entry does not point to the sending IP.",
        "auth_failure",
        "fix_auth",
    ),
    ("451 4.3.0 Mail server temporarily rejected message.", "connection", "retry_soon"),
    (
        "554 5.7.1 The message from (<bounce@example.com>) with the subject of (Hello) matches a profile the Internet community may consider spam. Please revise your message before resending.",
        "content_spam",
        "fix_content",
    ),
    ("421 4.4.2 Connection timed out", "connection", "retry_soon"),
    ("451 4.4.1 No answer from host", "connection", "retry_soon"),
    ("550 5.7.1 Rejected by header based Anti-Spoofing policy", "auth_failure", "fix_auth"),
    ("421 Service not available, closing transmission channel", "connection", "retry_soon"),
    ("550 High probability of spam", "content_spam", "fix_content"),
    (
        "554 5.7.1 This message has been blocked because it contains a virus",
        "content_spam",
        "fix_content",
    ),
    ("550 5.7.1 Command rejected", "policy", "dead_letter"),
    ("550 Message rejected because it contains malware", "content_spam", "fix_content"),
]


# second round: where two readings compete (rate limit vs its stated reason, a sender
# rejected vs a recipient, a 4.x.x code inside a 5xx reply, content wordings)
PROBE_CASES += [
    (
        "554 Service unavailable; Client host [192.0.2.1] blocked using Barracuda Reputation; http://www.barracudanetworks.com/reputation/?pr=1&ip=192.0.2.1",
        "dnsbl_listed",
        "pause_pool",
    ),
    (
        "Rejected (mail.example.com:25:530 5.7.1 Client was not authenticated(at FROM))",
        "policy",
        "dead_letter",
    ),
    ("550 4.4.7 QUEUE.Expired; message expired", "connection", "dead_letter"),
    ("550 5.7.1 Spam message rejected", "content_spam", "fix_content"),
    (
        "550 5.7.1 <bounce@example.com>: Sender address rejected: Access denied",
        "policy",
        "dead_letter",
    ),
    (
        "552 5.2.0 Message rejected. Your message was detected as spam. IB605",
        "content_spam",
        "fix_content",
    ),
    (
        "554 bizsmtp IB401 Connection refused. 192.0.2.1 is in the bl.spamcop.net RBL.",
        "dnsbl_listed",
        "pause_pool",
    ),
    ("421 4.3.2 Service not available", "connection", "retry_soon"),
    ("550 5.7.1 This message is not RFC 5322 compliant", "policy", "dead_letter"),
    ("421 4.7.0 Temporary System Problem.  Try again later (10).", "connection", "retry_soon"),
    (
        "450 4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time.",
        "throttled",
        "retry_later",
    ),
    ("550 5.2.1 Mailbox disabled, not accepting messages", "mailbox_unknown", "suppress_recipient"),
    (
        "552 5.2.2 The email account that you tried to reach is over quota.",
        "mailbox_full",
        "retry_later",
    ),
    ("550 5.7.1 Rejected - listed at hostkarma.junkemailfilter.com", "dnsbl_listed", "pause_pool"),
    (
        "554 5.7.1 Rejected because 192.0.2.1 is in a black list at dnsbl.sorbs.net",
        "dnsbl_listed",
        "pause_pool",
    ),
    ("550 5.7.0 Local Policy Violation", "policy", "dead_letter"),
    (
        "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.",
        "throttled",
        "retry_slow_down",
    ),
    (
        "421 4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.",
        "throttled",
        "retry_slow_down",
    ),
    (
        "550 5.7.1 Your IP address has been blocked due to spam complaints",
        "reputation_block",
        "pause_pool",
    ),
    ("550 5.7.1 Message rejected due to content restrictions", "content_spam", "fix_content"),
    ("550 5.7.1 Email rejected due to security policies", "policy", "dead_letter"),
    ("421 4.7.0 Temporarily rejected due to a suspicious IP", "reputation_block", "pause_pool"),
    (
        "550 5.1.1 The email account that you tried to reach does not exist.",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    (
        "550 Requested action not taken: mailbox unavailable",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    ("452 4.5.3 Too many recipients", "throttled", "retry_soon"),
    ("550 5.7.1 Message rejected: spf check failed", "auth_failure", "fix_auth"),
    (
        "550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy.",
        "auth_failure",
        "fix_auth",
    ),
    ("550 5.7.1 Sender is on user's blocklist", "policy", "dead_letter"),
    (
        "550 5.7.515 Access denied, sending domain example.com doesn't meet the required authentication level.",
        "auth_failure",
        "fix_auth",
    ),
    (
        "550 Message was not accepted -- invalid mailbox.  Local mailbox user@example.com is unavailable: user not found",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    (
        "554 5.7.1 Message rejected because of unacceptable content. For help, please quote incident ID 12345.",
        "content_spam",
        "fix_content",
    ),
    ("550 5.7.1 Unauthorized sender: DKIM signature failed", "auth_failure", "fix_auth"),
    (
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.1]",
        "auth_failure",
        "fix_auth",
    ),
]


# third round: Exchange Online 5.7.708 / 5.7.520, HELO syntax, concurrency wordings
PROBE_CASES += [
    ("553 Relaying disallowed", "relay_denied", "dead_letter"),
    ("554 5.7.1 Access denied", "policy", "dead_letter"),
    ("501 5.5.2 <bad_helo>: Helo command rejected: Invalid name", "auth_failure", "fix_auth"),
    (
        "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        "reputation_block",
        "pause_pool",
    ),
    (
        "550 5.7.520 Access denied, Your organization does not allow external forwarding.",
        "policy",
        "dead_letter",
    ),
    (
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
        "mailbox_unknown",
        "suppress_recipient",
    ),
    ("421 4.3.0 Temporary system failure, please try again later", "connection", "retry_soon"),
    ("550 5.7.1 IP 192.0.2.1 is on our blocklist", "reputation_block", "pause_pool"),
    ("554 5.7.0 Reject, id=12345 - spam", "content_spam", "fix_content"),
    (
        "450 4.7.1 Recipient address rejected: Policy Rejection- Quota Exceeded",
        "mailbox_full",
        "retry_later",
    ),
    (
        "550 5.7.1 Message rejected due to DMARC. Please see http://support.example.com",
        "auth_failure",
        "fix_auth",
    ),
    (
        "421 4.7.0 Connection refused - too many messages from 192.0.2.1",
        "throttled",
        "retry_slow_down",
    ),
    ("550 5.1.8 Bad sender's mailbox address syntax", "dns_failure", "fix_auth"),
    ("421 4.4.5 Service unavailable, concurrency limit reached", "connection", "retry_slow_down"),
]


@pytest.mark.parametrize(
    ("text", "category", "action"), PROBE_CASES, ids=[c[0][:40] for c in PROBE_CASES]
)
def test_unprofiled_probe(text: str, category: str, action: str) -> None:
    v = CLF.classify(None, None, text)
    assert (v.category, v.action) == (category, action), (v.rule, v.reasons)


def test_concurrency_is_connection_but_connection_rate_stays_throttled() -> None:
    """A per-IP concurrency cap is `connection`; Postfix's plain "too many connections from"
    stays `throttled` (its own generic rule); both slow the pool down."""
    cap = CLF.classify(None, 421, "421 Too many concurrent SMTP connections from 192.0.2.1")
    rate = CLF.classify(
        None, 421, "421 4.7.0 mx.example Error: too many connections from 192.0.2.1"
    )
    assert (cap.category, cap.action, cap.rule) == (
        "connection",
        "retry_slow_down",
        "text.concurrency",
    )
    assert (rate.category, rate.action) == ("throttled", "retry_slow_down")
    assert rate.rule == "generic.postfix.too_many_connections"


def test_outlook_rp_without_provider_and_with_outlook_agree() -> None:
    text = "421 RP-002 (COL004-MC2F7) Unfortunately, some messages from 192.0.2.1 weren't sent."
    bare = CLF.classify(None, None, text)
    assert (bare.category, bare.action, bare.rule) == (
        "throttled",
        "retry_slow_down",
        "text.outlook_rp",
    )
    assert CLF.classify("outlook", None, text).category == "throttled"
    # an RP- that is not Outlook's code shape is not taken for one
    assert CLF.classify(None, None, "421 see RP-0012345 later").rule != "text.outlook_rp"


def test_rate_limited_without_provider_agrees_with_the_profiles() -> None:
    """With no provider given, a "temporarily rate limited" reply that the gmail and outlook
    profiles read as a rate or reputation slow-down reads the same: throttled, except when
    very low reputation is the cause (reputation_block) or a URL domain (content_spam)."""
    corpus = [
        r
        for r in load_replies()
        if r.provider in ("gmail", "outlook")
        and "rate limited" in r.text
        and r.category in ("throttled", "reputation_block", "content_spam")
    ]
    assert len(corpus) >= 4
    for r in corpus:
        bare = CLF.classify(None, r.code, r.text)
        assert (bare.category, bare.action) == (r.category, r.action), (r.text, bare.rule)
