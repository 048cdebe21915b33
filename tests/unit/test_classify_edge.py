"""Replies from receivers with no profile: the text rules and registry must hold on their own.

Wordings as these MTAs and providers print them (public bounce samples and documentation);
each is classified with provider=None so no profile rule can help.
"""

from __future__ import annotations

import pytest

from engine.policy.classify import Classifier
from engine.profiles import load_profiles

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
        "550-Verification failed for <bounce@example.com>\n550-Unrouteable address\n550 Sender verify failed",
        "mailbox_unknown",
        "suppress_recipient",
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
