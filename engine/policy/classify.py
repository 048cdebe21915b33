"""Provider-aware classification of SMTP replies into a ``Verdict`` with a reason chain.

Owns the decision order: (1) the provider's own rules, in file order; (2) cross-provider text
rules (named blocklists, unknown users, quota, greylisting, relay, TLS, SPF/DKIM/DMARC/PTR,
...); (3) the RFC 3463 / RFC 5248 enhanced status code registry (plus RFC 7372 and RFC 7505
codes); (4) the basic reply code. ``temporary`` is the SMTP class and nothing else. The words
used are those of ``engine.policy.types`` (meanings in the reply-vocabulary reference).

Pure: no IO, no clocks. Rules are compiled once; provider rules are indexed by basic and
enhanced code and guarded by literal checks; the cross-provider text stage finds every guard
literal of every text rule in ONE Aho-Corasick scan (``_GuardIndex``) and then runs only
the alternatives whose literal occurs, where it occurs - exactly what an in-order search of
the rules would pick (a property test holds it to that).
It must not load files (``engine.profiles`` does) nor keep state between calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ahocorasick

from engine.policy.providers import GENERIC, ProviderMatcher
from engine.policy.smtpreply import parse_reply
from engine.policy.types import Action, Category, ProviderProfile, ReplyRule, Scope, Verdict

__all__ = ["DEFAULT_RETRY_S", "TEXT_RULES", "Classifier", "TextRule"]

# Seconds to wait before the next attempt when a rule names none ("sensible defaults": no
# public figure; greylisting servers commonly accept after 1-5 minutes, see the
# simulation-numbers reference). Permanent actions get no retry.
DEFAULT_RETRY_S: dict[Action, int | None] = {
    "retry_soon": 300,
    "retry_slow_down": 900,
    "retry_later": 14400,
    "pause_pool": 3600,
    "suppress_recipient": None,
    "fix_auth": None,
    "fix_content": None,
    "dead_letter": None,
}
# A 4xx reply that needs a fix on our side is still a deferral: the receiver asks us to come
# back, so we do, after this long.
_TEMPORARY_FIX_RETRY_S = 3600


_LITERAL_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 -:'\",/#;=@<>!%&_~`")
_QUANTIFIERS = frozenset("?*{")


def _split_top(pattern: str) -> list[str]:
    """Split a regex at its top-level ``|`` (outside groups and character classes)."""
    parts: list[str] = []
    depth = 0
    in_class = False
    start = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    return parts


def _leading_literal(alt: str) -> tuple[str, bool]:
    """The literal text every match of ``alt`` starts with (lower-case), and whether ``alt``
    is that literal and nothing more. Leading ``\\b`` is skipped."""
    i = 0
    while alt.startswith("\\b", i):
        i += 2
    out: list[str] = []
    while i < len(alt):
        ch = alt[i]
        if ch == "\\" and i + 1 < len(alt) and not alt[i + 1].isalnum():
            lit, step = alt[i + 1], 2
        elif ch.lower() in _LITERAL_OK:
            lit, step = ch.lower(), 1
        else:
            break
        if i + step < len(alt) and alt[i + step] in _QUANTIFIERS:
            break
        out.append(lit)
        i += step
    literal = "".join(out)
    rest = alt[i:]
    pure = rest == "" or rest == "\\b"
    return literal, pure and not alt.startswith("\\b") and rest == ""


class _Guarded:
    """A case-insensitive regex evaluated through literal guards (see ``TextRule``).

    The regex is split at its top-level ``|``: alternatives that are plain literals are found
    in one scan of the lower-cased text; an alternative that starts with a literal is tried
    only where that literal occurs; the residual alternatives only when one of ``keys`` occurs
    (always, without keys). Non-ASCII text takes the full regex.
    """

    __slots__ = ("full", "guarded", "key_list", "keys", "literal_list", "literals", "residual")

    def __init__(self, pattern: str, keys: tuple[str, ...] = ()) -> None:
        self.full = re.compile(pattern, re.IGNORECASE)
        guarded: list[tuple[str, re.Pattern[str]]] = []
        literals: list[str] = []
        residual: list[str] = []
        for alt in _split_top(pattern):
            literal, pure = _leading_literal(alt)
            if len(literal) >= 3 and pure:
                literals.append(literal)
            elif len(literal) >= 3:
                guarded.append((literal, re.compile(alt, re.IGNORECASE)))
            else:
                residual.append(alt)
        self.literal_list = tuple(literals)
        self.guarded: tuple[tuple[str, re.Pattern[str]], ...] = tuple(guarded)
        self.key_list = tuple(k.lower() for k in keys) if residual else ()
        # all pure-literal alternatives in one scan of the lower-cased text
        self.literals = _alternation(literals)
        self.residual = re.compile("|".join(residual), re.IGNORECASE) if residual else None
        self.keys = _alternation(list(self.key_list))

    def search(self, text: str, low: str, ascii_text: bool = True) -> bool:
        """True when the regex matches ``text``; ``low`` is ``text.lower()``."""
        if not ascii_text:
            return self.full.search(text) is not None
        if self.literals is not None and self.literals.search(low) is not None:
            return True
        for literal, rx in self.guarded:
            at = low.find(literal)
            if at >= 0 and rx.search(text, at) is not None:
                return True
        if self.residual is None:
            return False
        if self.keys is not None and self.keys.search(low) is None:
            return False
        return self.residual.search(text) is not None


def _alternation(literals: list[str]) -> re.Pattern[str] | None:
    """One regex for "any of ``literals``" (longest first), or None for none."""
    if not literals:
        return None
    ordered = sorted(set(literals), key=lambda x: (-len(x), x))
    return re.compile("|".join(re.escape(x) for x in ordered))


@dataclass(frozen=True, slots=True)
class TextRule:
    """A cross-provider rule: a case-insensitive regex, evaluated through literal guards.

    ``pattern`` is split at its top-level ``|``; each alternative that starts with a literal
    of 3+ characters is only tried when that literal occurs in the lower-cased text (a plain
    substring test), the others only when one of ``keys`` occurs. Non-ASCII text takes the
    exact path (the whole pattern), so the guards never change a result.
    """

    id: str
    keys: tuple[str, ...]
    pattern: re.Pattern[str]
    category: Category
    action: Action
    scope: Scope
    guard: _Guarded
    classes: str = "245"  # reply classes (first digit) it applies to

    def matches(self, text: str, low: str) -> bool:
        """True when ``pattern`` matches ``text`` (``low`` is ``text.lower()``)."""
        return self.guard.search(text, low, text.isascii())


def _tr(
    name: str,
    keys: tuple[str, ...],
    pattern: str,
    category: Category,
    action: Action,
    scope: Scope,
    classes: str = "245",
) -> TextRule:
    guard = _Guarded(pattern, keys)
    return TextRule(f"text.{name}", keys, guard.full, category, action, scope, guard, classes)


# Order matters: the first rule that matches wins. Specific before general.
TEXT_RULES: tuple[TextRule, ...] = (
    # A Spamhaus DBL / URI blocklist hit is about a domain in the body (reply-vocabulary).
    _tr(
        "spamhaus_dbl",
        ("dbl", "uribl", "surbl"),
        r"spamhaus\W{0,3}dbl|dbl\.spamhaus|\buribl\b|\bsurbl\b|multi\.uribl|multi\.surbl",
        "dnsbl_listed",
        "fix_content",
        "domain",
    ),
    _tr("spamhaus", ("spamhaus",), r"spamhaus", "dnsbl_listed", "pause_pool", "ip"),
    _tr(
        "barracuda",
        ("barracuda", "brbl"),
        r"barracuda(central)?|\bbrbl\b",
        "dnsbl_listed",
        "pause_pool",
        "ip",
    ),
    _tr("spamcop", ("spamcop",), r"spamcop", "dnsbl_listed", "pause_pool", "ip"),
    _tr(
        "dnsbl",
        (
            "bl",
            "sorbs",
            "abuseat",
            "cloudmark",
            "uceprotect",
            "mailspike",
            "senderscore",
            "ivmsip",
            "invaluement",
            "spamrats",
            "psbl",
            "backscatter",
            "0spam",
            "abusix",
            "blocked using",
            "listed",
            "gbudb",
            "hostkarma",
            "lashback",
            "nordspam",
        ),
        r"\bdnsbl\b|\brbl\b|\bdnsbls\b|sorbs|abuseat|\bcbl\b|cloudmark|uceprotect|mailspike|"
        r"senderscore|ivmsip|invaluement|spamrats|\bpsbl\b|backscatterer|0spam|abusix|gbudb|"
        r"hostkarma|lashback|nordspam|blocked using [a-z0-9.-]+\.[a-z]{2,}|"
        # Trend Micro's Email Reputation Services (the former MAPS lists, lookup pages on
        # mail-abuse.com) are public IP blocklists: https://ers.trendmicro.com/
        r"trend micro (?:email reputation|rbl|qil|dul|ers)|mail-abuse\.(?:com|org)|"
        r"listed (?:in|on|at|by) (?:the )?[a-z0-9.-]+\.(?:org|net|com|info)\b",
        "dnsbl_listed",
        "pause_pool",
        "ip",
    ),
    _tr(
        "mail_loop",
        ("loop", "hop"),
        r"mail(?:ing)? loop|loop(?:s)? (?:back to myself|detected)|routing loop|too many hops|"
        r"hop count exceeded|exceeded \d+ hops",
        "connection",
        "dead_letter",
        "message",
    ),
    _tr(
        "dns_temporary",
        ("dns", "lookup", "domain failure", "name service", "servfail"),
        r"temporary (?:dns|lookup|domain) failure|dns (?:lookup )?(?:timeout|temporar\w+|"
        r"failure, try again)|servfail|name service error.{0,80}try again|"
        r"temporar\w+ (?:dns|resolution) (?:failure|error)",
        "dns_failure",
        "retry_soon",
        "domain",
    ),
    # A resolver failing on the receiver's side while it checks us ("451 4.4.0 DNS resolution
    # failed"); 4xx only: a 5xx "lookup failed" is about the recipient domain (below).
    _tr(
        "dns_resolution",
        ("dns", "resolver"),
        r"dns (?:resolution|lookup|query) (?:has )?(?:failed|failure|error)|"
        r"resolver (?:failure|error)",
        "dns_failure",
        "retry_soon",
        "domain",
        "4",
    ),
    _tr(
        "sender_domain",
        ("sender", "envelope", "from domain", "dns records", "dns check"),
        r"sender (?:address )?(?:rejected: )?domain not found|"
        r"sender domain.{0,40}(?:not found|does not exist|must exist|must resolve|resolve fail)|"
        r"domain of sender address.{0,80}does not (?:exist|resolve)|envelope sender domain must exist|"
        r"sender domain resolve fail|unresolvable (?:rfc ?532[12] )?(?:from|sender) domain|"
        r"has no a, aaaa,? or mx (?:dns )?records|domain may not exist or dns check failed|"
        r"sender address has (?:a )?null mx",
        "dns_failure",
        "fix_auth",
        "domain",
    ),
    _tr("null_mx", ("null mx",), r"null mx", "dns_failure", "suppress_recipient", "recipient"),
    _tr(
        "recipient_domain",
        ("domain", "no mx", "host not found", "mx record"),
        r"(?:recipient|rcpt) (?:address )?(?:rejected: )?domain not found|"
        r"host or domain name not found|domain (?:name )?(?:does not exist|not found|unknown)|"
        r"unknown domain|no mx (?:record )?(?:for|found)|domain lookup failed|unrouteable domain|"
        r"no route to (?:domain|host)|domain has no mx",
        "dns_failure",
        "suppress_recipient",
        "recipient",
    ),
    _tr(
        "mailbox_full",
        ("quota", "full", "storage", "size limit", "voll", "pleine", "exceeded"),
        r"over ?quota|quota (?:exceeded|exceeds|full|violation)|exceed\w* (?:the |its |their )?"
        r"(?:storage|quota|mailbox size|disk quota)|mailbox (?:is )?full|full mailbox|"
        r"mailbox size limit|inbox is (?:full|out of storage)|out of storage space|"
        r"storage (?:allocation|limit) exceeded|mailbox has exceeded|postfach voll|"
        r"bo[iî]te (?:aux lettres )?pleine|insufficient (?:user )?quota|mail ?box (?:is )?over",
        "mailbox_full",
        "retry_later",
        "recipient",
    ),
    # Exim's sender verification (``verify = sender``, a callout to our Return-Path domain)
    # fails with "Sender verify failed", after lines such as "Verification failed for <...>"
    # and "Unrouteable address" that describe OUR envelope sender, not the recipient
    # (https://www.exim.org/exim-html-current/doc/html/spec_html/ch-access_control_lists.html).
    _tr(
        "sender_verify",
        ("sender verif",),
        r"sender verif(?:y|ication) failed",
        "policy",
        "fix_auth",
        "domain",
    ),
    # Postfix check_sender_access REJECT: "Sender address rejected: Access denied"
    # (https://www.postfix.org/access.5.html) is about our sender, not the recipient.
    _tr(
        "sender_rejected",
        ("sender address rejected",),
        r"sender address rejected: (?:access denied|blocked|not (?:owned|logged in))",
        "policy",
        "dead_letter",
        "message",
    ),
    _tr(
        "mailbox_unknown",
        (
            "user",
            "exist",
            "mailbox",
            "recipient",
            "address",
            "account",
            "unknown",
            "inconnu",
            "unbekannt",
            "no such",
            "recip",
            "mail-box",
            "not our customer",
            "valid",
        ),
        r"user unknown|unknown user|no such (?:user|mailbox|recipient|account|address|person|id)|"
        r"(?:does not|doesn'?t|not) exist|invalid (?:recipient|mailbox|address|user|account)|"
        r"recipient (?:address )?rejected: (?:user unknown|undeliverable|access denied|unknown)|"
        r"mailbox (?:unavailable|not found|does not exist|disabled|inactive|name not allowed)|"
        r"unknown (?:recipient|mailbox|local[- ]?part|address|alias)|address (?:unknown|invalid|"
        r"not found|rejected)|recipient (?:not found|unknown|unrecognized)|"
        r"account (?:is )?(?:disabled|inactive|closed|deactivated|not active|suspended|expired)|"
        r"user (?:not found|doesn'?t have|does not have|account (?:is )?disabled)|no mail-?box|"
        r"not a valid (?:user|mailbox|recipient|address)|unrouteable address|recipnotfound|"
        r"recipientnotfound|utilisateur inconnu|benutzer unbekannt|empf[aä]nger unbekannt|"
        r"addressee unknown|not our customer|mailbox is disabled|disabled mailbox|"
        r"inactive mailbox|no longer (?:valid|active|in use)|has been disabled|"
        r"i cannot deliver mail for|no mailbox here by that name|bad destination mailbox|"
        r"user is terminated|unknown or illegal alias|not listed in domino directory",
        "mailbox_unknown",
        "suppress_recipient",
        "recipient",
        "5",
    ),
    _tr(
        "greylist",
        ("grey", "gray", "postgrey", "not yet authori"),
        r"gr[ae]y-?list|postgrey|not yet authori[sz]ed to deliver",
        "greylist",
        "retry_soon",
        "connection",
    ),
    _tr(
        "relay_denied",
        ("relay", "rcpthosts", "not local", "not a gateway"),
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed|refused|"
        r"disallowed|forbidden)|unable to relay|not permitted to relay|(?:do not|don'?t) relay|"
        r"isn'?t allowed to relay|no relaying|allowed rcpthosts|user not local|not a gateway|"
        r"relay not (?:permitted|allowed)",
        "relay_denied",
        "dead_letter",
        "message",
    ),
    _tr(
        "tls_required",
        ("tls", "ssl", "encrypt", "secure connection"),
        r"(?:starttls|tls|ssl|encryption|secure connection)\W{0,3}(?:is )?(?:required|mandatory|"
        r"needed)|must issue a starttls|requires? (?:a )?(?:tls|starttls|encryption|secure)|"
        r"must use (?:tls|starttls)|not using a tls|wasn'?t sent over a tls|"
        r"encryption (?:is )?(?:required|needed)",
        "tls_required",
        "fix_auth",
        "connection",
    ),
    _tr(
        "smtp_auth",
        ("authenticat", "smtp auth"),
        r"client was not authenticated|authentication (?:is )?required|must authenticate|"
        r"turn on smtp authentication|smtp auth(?:entication)? (?:is )?required",
        "policy",
        "dead_letter",
        "message",
    ),
    # Gmail's 421 4.7.28 "unusual rate of (unsolicited) email ... temporarily rate limited"
    # names an SPF or DKIM domain as the source; the reply is still a rate limit (throttled,
    # reply-vocabulary), or content_spam when the source is a URL domain in the body. Ahead of
    # the auth rule, which would otherwise take "your DKIM domain" for an auth failure.
    _tr(
        "unusual_rate_url",
        ("unusual rate",),
        r"unusual rate of .{0,80}containing one of your url domains",
        "content_spam",
        "retry_slow_down",
        "domain",
    ),
    _tr(
        "unusual_rate_limited",
        ("unusual rate",),
        r"unusual rate of .{0,250}rate[- ]limited",
        "throttled",
        "retry_slow_down",
        "ip",
    ),
    _tr(
        "ptr",
        ("ptr", "reverse", "rdns", "hostname", "fcrdns", "forward"),
        r"\bptr\b|reverse (?:dns|hostname|lookup|mapping)|\brdns\b|fcrdns|forward[- ]confirmed|"
        r"cannot find your (?:reverse )?hostname|(?:helo|ehlo).{0,40}(?:does not|doesn'?t) "
        r"(?:resolve|match)|does not resolve to your ip|hostname .{0,40}does not match|"
        # our HELO name (Exim ACL "Invalid HELO name", Postfix reject_non_fqdn_helo_hostname)
        r"invalid (?:helo|ehlo)|(?:helo|ehlo) (?:name|hostname) (?:is )?(?:invalid|not valid)|"
        r"need fully-qualified hostname|helo command rejected: invalid|"
        r"ehlo command rejected: invalid",
        "auth_failure",
        "fix_auth",
        "ip",
    ),
    _tr(
        "auth",
        ("spf", "dkim", "dmarc", "domainkeys", "authenticat", "align", "sender policy"),
        r"\bspf\b|\bdkim\b|\bdmarc|domainkeys|sender policy framework|unauthenticated|"
        r"not authenticated|authentication (?:failed|failure|check|results|level)|"
        r"failed (?:the )?authentication|\baligned\b|alignment|"
        # Exchange Online's "Rejected by header based Anti-Spoofing policy": the From domain
        # failed its authentication checks (https://learn.microsoft.com/en-us/defender-office-
        # 365/anti-spoofing-protection-about)
        r"anti-?spoofing",
        "auth_failure",
        "fix_auth",
        "domain",
    ),
    _tr(
        "too_large",
        ("size", "large", "big", "volumin", "groß"),
        r"message (?:size )?(?:is )?(?:too (?:big|large)|exceeds|larger than)|size (?:limit|exceeds)|"
        r"exceeds? (?:the )?(?:fixed )?max(?:imum)? (?:message )?size|message file too big|"
        r"too (?:big|large) for|message length exceeds|mail size|exceeded .{0,20}size|"
        r"zu gro(?:ß|ss)|trop (?:gros|volumineux)|size of .{0,30}exceeds",
        "message_too_large",
        "dead_letter",
        "message",
    ),
    _tr(
        "too_many_recipients",
        ("recipients",),
        r"too many recipients|recipient limit|maximum (?:number of )?recipients",
        "throttled",
        "retry_soon",
        "message",
    ),
    # Outlook.com's RP-00x deferrals quoted by any relay, no provider given: "We have limits
    # for how many messages can be sent per hour and per day" (https://sendersupport.olc.
    # protection.outlook.com/pm/troubleshooting.aspx).
    _tr(
        "outlook_rp",
        ("rp-", "limits for how many"),
        r"\brp-00\d\b|limits for how many (?:messages|e?mails) can be sent",
        "throttled",
        "retry_slow_down",
        "ip",
    ),
    _tr(
        "throttle_recipient",
        ("receiving", "too many messages for", "recipient rate", "mailbox rate", "delivery rate"),
        r"(?:user|recipient|mailbox|account) is receiving (?:e?mail )?(?:too quickly|at a rate)|"
        r"receiving (?:e?mail|messages) too (?:quickly|fast)|too many messages (?:for|to) "
        r"(?:this|the) (?:user|recipient|mailbox|address)|(?:recipient|mailbox) (?:delivery )?rate",
        "throttled",
        "retry_later",
        "recipient",
    ),
    # A per-IP concurrency cap (Cisco Secure Email and Exim's smtp_accept_max both answer
    # "421 Too many concurrent SMTP connections ..."): the conversation is refused, not the
    # volume, so `connection` (reply-vocabulary), and we open fewer connections at once.
    _tr(
        "concurrency",
        ("concurren",),
        r"too many concurrent (?:smtp )?(?:connections|sessions)|"
        r"concurrent (?:connection|session)s? (?:limit|exceeded)|concurrency limit",
        "connection",
        "retry_slow_down",
        "connection",
    ),
    _tr(
        "throttle_connection",
        ("connection", "session", "concurren"),
        r"too many (?:smtp )?(?:connections|sessions|concurrent)|connection (?:limit|rate)|"
        r"max(?:imum)? (?:number of )?(?:connections|sessions)|concurrent (?:connections|sessions)|"
        r"connection frequency",
        "throttled",
        "retry_slow_down",
        "connection",
    ),
    # ... except a "very low reputation" named as the cause: Gmail's 421 4.7.0 "suspicious due
    # to the very low reputation ... temporarily rate limited" is reputation_block, slowed down
    # (as the gmail profile reads it; reply-vocabulary, reputation_block).
    _tr(
        "low_reputation_rate_limited",
        ("low reputation",),
        r"low reputation.{0,200}rate[- ]limited",
        "reputation_block",
        "retry_slow_down",
        "ip",
    ),
    # "temporarily rate limited" wins over the reason given with it ("due to IP reputation",
    # "unusual rate of unsolicited mail"): the receiver still takes mail, slower (Outlook
    # 4.7.650 and Gmail 4.7.28 in the reply-vocabulary are throttled / retry_slow_down).
    _tr(
        "rate_limited",
        ("rate limit", "rate-limit"),
        r"rate[- ]limited",
        "throttled",
        "retry_slow_down",
        "ip",
    ),
    _tr(
        "reputation",
        (
            "reputation",
            "block",
            "banned",
            "blacklist",
            "dynamic",
            "residential",
            "dial",
            "refused",
            "refuse",
            "poor",
            "denied",
            "(bl)",
        ),
        r"reputation|suspicious (?:ip|host|network|sender ip)\b|"
        # Exchange Online 5.7.708 "traffic not accepted from this IP" (low-reputation IP,
        # https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/
        # non-delivery-reports-in-exchange-online/non-delivery-reports-in-exchange-online)
        r"traffic not accepted from (?:this|your) ip|"
        r"(?:ip|sender|sending|host|server|network|domain|address)\b.{0,40}"
        r"(?:blocked|banned|blacklisted|block-?listed|black-?listed)|"
        r"(?:blocked|banned|blacklisted) (?:your |the |this )?(?:ip|sender|host|server|domain)|"
        r"on our (?:internal )?(?:block|black) ?list|(?:our|local) (?:block|black) ?list|"
        r"\bbanned\b|dynamic (?:ip|address|pool|range)|residential|dial-?up|"
        r"service refused|not accepting mail from (?:your|this) (?:ip|server|host)|\(bl\)\s*$",
        "reputation_block",
        "pause_pool",
        "ip",
    ),
    _tr(
        "content_spam",
        (
            "spam",
            "junk",
            "unsolicited",
            "content",
            "virus",
            "malware",
            "phish",
            "infected",
            "attachment",
            "suspicious",
            "bulk",
            "dt:spm",
        ),
        r"\bspam\b|spam (?:content|score|message)|junk ?mail|unsolicited|bulk mail|"
        r"content (?:filter|rejected|policy|denied)|(?:message|mail) content|suspicious|phish|"
        r"virus|malware|infected|(?:banned|prohibited|illegal|forbidden|blocked) attachment|"
        r"looks like spam|spam-?like|classified as spam|dt:spm|content restrictions?|"
        r"unacceptable content|(?:rejected|blocked) (?:due to|because of) (?:its |the )?content",
        "content_spam",
        "fix_content",
        "message",
    ),
    _tr(
        "throttled",
        (
            "rate",
            "limit",
            "too many",
            "too fast",
            "too quick",
            "too much",
            "throttl",
            "frequency",
            "volume",
            "deferred",
            "slow down",
            "exceeded",
        ),
        r"rate[- ]?limit|\blimit(?:ed|s)? (?:exceeded|reached)|too many (?:messages|mails|emails)|"
        r"too (?:fast|quickly)|too much mail|throttl|frequency limit|"
        r"exceeded .{0,30}(?:limit|rate|quota)|(?:sending|message|mail) rate|"
        r"unexpected volume|excessive volume|high volume|temporarily deferred|deferred due to|"
        r"slow down|(?:daily|hourly) (?:sending )?(?:limit|quota)|sending quota",
        "throttled",
        "retry_slow_down",
        "ip",
    ),
    _tr(
        "policy",
        (
            "polic",
            "not allowed",
            "not permitted",
            "prohibit",
            "refused",
            "denied",
            "forbidden",
            "not accepted",
            "rfc",
            "malformed",
            "header",
            "reject",
        ),
        r"polic(?:y|ies)|not allowed|not permitted|prohibit|administrative(?:ly)?|"
        r"access denied|\bdenied\b|forbidden|not accepted|rfc ?(?:5322|2822|822|5321|2821)|"
        r"malformed|header|\brefused\b|rejected by (?:the )?(?:recipient|local|content)",
        "policy",
        "dead_letter",
        "message",
    ),
    _tr(
        "connection",
        (
            "timeout",
            "timed out",
            "connection",
            "unavailable",
            "busy",
            "try again",
            "temporar",
            "resource",
            "insufficient",
            "error",
            "problem",
            "shutdown",
        ),
        r"time ?out|timed out|connection (?:lost|reset|closed|dropped|refused)|lost connection|"
        r"service (?:is )?(?:currently |temporarily )?(?:not available|unavailable)|server (?:is )?busy|"
        r"come back later|"
        r"try again later|temporar\w* (?:failure|unavailable|error|problem|rejected)|"
        r"system (?:busy|problem)|resources? (?:temporarily )?unavailable|"
        r"insufficient system (?:storage|resources)|local error|internal (?:server )?error|"
        r"shutting down|closing (?:transmission|connection)",
        "connection",
        "retry_soon",
        "connection",
    ),
)


class _GuardIndex:
    """Which of a tuple of guarded regexes matches first, from ONE scan of the lower-cased text.

    One Aho-Corasick automaton (C, ``pyahocorasick``) reports every occurrence of every
    literal the guards use (plain-literal alternatives, literal prefixes of other
    alternatives, keys) in a single pass. Then: an entry with a plain literal found certainly
    matches (``None`` matches everything); an alternative with a literal prefix is matched
    only where its prefix was found; residual alternatives run only when a key was found
    (always, without keys) - and only for entries earlier than the best match so far.
    Non-ASCII text: a plain in-order search.
    """

    __slots__ = ("_automaton", "_guards", "_residual", "_sure_always")

    def __init__(self, guards: tuple[_Guarded | None, ...]) -> None:
        self._guards = guards
        sure: dict[str, int] = {}
        keys: dict[str, int] = {}
        alts: dict[str, list[tuple[int, re.Pattern[str]]]] = {}
        residual = 0
        sure_always = 0
        for i, g in enumerate(guards):
            bit = 1 << i
            if g is None:
                sure_always |= bit
                continue
            for lit in g.literal_list:
                sure[lit] = sure.get(lit, 0) | bit
            for lit, rx in g.guarded:
                alts.setdefault(lit, []).append((i, rx))
            if g.residual is not None:
                if g.key_list:
                    for k in g.key_list:
                        keys[k] = keys.get(k, 0) | bit
                else:
                    residual |= bit
        self._residual = residual
        self._sure_always = sure_always
        # per literal: (length - 1, sure bits, key bits, alternatives starting with it)
        every = set(sure) | set(keys) | set(alts)
        automaton: Any = None
        if every:
            automaton = ahocorasick.Automaton()
            for lit in sorted(every):
                entry = (
                    len(lit) - 1,
                    sure.get(lit, 0),
                    keys.get(lit, 0),
                    tuple(sorted(alts.get(lit, ()), key=lambda x: x[0])),
                )
                automaton.add_word(lit, entry)
            automaton.make_automaton()
        self._automaton = automaton

    def first(self, text: str, low: str, ascii_text: bool) -> int:
        """Index of the first entry that matches ``text`` (``low`` is ``text.lower()``),
        or -1 when none does."""
        guards = self._guards
        if not ascii_text:
            for i, g in enumerate(guards):
                if g is None or g.full.search(text) is not None:
                    return i
            return -1
        sure = self._sure_always
        residual = self._residual
        found: list[tuple[int, tuple[tuple[int, re.Pattern[str]], ...]]] = []
        if self._automaton is not None:
            for end, (back, s_bits, k_bits, alts) in self._automaton.iter(low):
                sure |= s_bits
                residual |= k_bits
                if alts:
                    found.append((end - back, alts))
        best = (sure & -sure).bit_length() - 1 if sure else len(guards)
        for pos, alts in found:
            for i, rx in alts:
                if i >= best:
                    break
                if rx.match(text, pos) is not None:
                    best = i
                    break
        residual &= (1 << best) - 1
        i = 0
        while residual:
            if residual & 1:
                g = guards[i]
                if g is not None and g.residual is not None and g.residual.search(text):
                    return i
            residual >>= 1
            i += 1
        return best if best < len(guards) else -1


class _TextIndex:
    """The cross-provider text rules, one ``_GuardIndex`` per reply class."""

    __slots__ = ("_by_class",)

    def __init__(self, rules: tuple[TextRule, ...]) -> None:
        self._by_class: dict[str, tuple[tuple[TextRule, ...], _GuardIndex]] = {}
        for cls in ("", "2", "3", "4", "5"):
            chosen = tuple(r for r in rules if not cls or cls in r.classes)
            self._by_class[cls] = (chosen, _GuardIndex(tuple(r.guard for r in chosen)))

    def first(self, text: str, low: str, ascii_text: bool, cls: str) -> TextRule | None:
        """The first rule (in order) that matches ``text`` and applies to reply class ``cls``
        ("" for any); ``low`` is ``text.lower()``."""
        rules, index = self._by_class.get(cls) or self._by_class[""]
        at = index.first(text, low, ascii_text)
        return rules[at] if at >= 0 else None


_TEXT_INDEX = _TextIndex(TEXT_RULES)


@dataclass(frozen=True, slots=True)
class _Meaning:
    category: Category
    action: Action
    scope: Scope


def _m(category: Category, action: Action, scope: Scope) -> _Meaning:
    return _Meaning(category, action, scope)


# RFC 3463 / RFC 5248 enhanced status codes (subject.detail), class-independent meaning,
# plus RFC 7372 (X.7.20-X.7.26), RFC 7505 (X.1.10, X.7.27), RFC 8617 (X.7.29),
# RFC 8689 (X.7.30), RFC 6710 (X.7.15/16), RFC 7293 (X.7.17/18).
# https://www.iana.org/assignments/smtp-enhanced-status-codes
_REGISTRY: dict[str, _Meaning] = {
    "1.0": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "1.1": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "1.2": _m("dns_failure", "suppress_recipient", "recipient"),
    "1.3": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "1.4": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "1.6": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "1.7": _m("policy", "dead_letter", "message"),
    "1.8": _m("dns_failure", "fix_auth", "domain"),
    "1.10": _m("dns_failure", "suppress_recipient", "recipient"),
    "2.1": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "2.2": _m("mailbox_full", "retry_later", "recipient"),
    "2.3": _m("message_too_large", "dead_letter", "message"),
    "2.4": _m("policy", "dead_letter", "message"),
    "3.1": _m("connection", "retry_soon", "connection"),
    "3.2": _m("connection", "retry_soon", "connection"),
    "3.3": _m("policy", "dead_letter", "message"),
    "3.4": _m("message_too_large", "dead_letter", "message"),
    "3.5": _m("connection", "retry_soon", "connection"),
    "4.0": _m("connection", "retry_soon", "connection"),
    "4.1": _m("connection", "retry_soon", "connection"),
    "4.2": _m("connection", "retry_soon", "connection"),
    "4.3": _m("dns_failure", "retry_soon", "domain"),
    "4.4": _m("dns_failure", "suppress_recipient", "recipient"),
    "4.5": _m("connection", "retry_soon", "connection"),
    "4.6": _m("connection", "dead_letter", "message"),
    "4.7": _m("connection", "dead_letter", "message"),
    "5.0": _m("other", "dead_letter", "message"),
    "5.1": _m("other", "dead_letter", "message"),
    "5.2": _m("other", "dead_letter", "message"),
    "5.3": _m("throttled", "retry_soon", "message"),
    "5.4": _m("other", "dead_letter", "message"),
    "5.5": _m("other", "dead_letter", "message"),
    "5.6": _m("policy", "dead_letter", "message"),
    "6.0": _m("policy", "dead_letter", "message"),
    "6.1": _m("policy", "dead_letter", "message"),
    "6.2": _m("policy", "dead_letter", "message"),
    "6.3": _m("policy", "dead_letter", "message"),
    "6.4": _m("policy", "dead_letter", "message"),
    "6.5": _m("policy", "dead_letter", "message"),
    "6.6": _m("policy", "dead_letter", "message"),
    "6.7": _m("policy", "dead_letter", "message"),
    "6.8": _m("policy", "dead_letter", "message"),
    "6.9": _m("policy", "dead_letter", "message"),
    "6.10": _m("policy", "dead_letter", "message"),
    "7.1": _m("policy", "dead_letter", "message"),
    "7.2": _m("policy", "dead_letter", "message"),
    "7.3": _m("policy", "dead_letter", "message"),
    "7.4": _m("tls_required", "fix_auth", "connection"),
    "7.5": _m("tls_required", "fix_auth", "connection"),
    "7.6": _m("tls_required", "fix_auth", "connection"),
    "7.7": _m("policy", "dead_letter", "message"),
    "7.8": _m("policy", "dead_letter", "message"),
    "7.9": _m("policy", "dead_letter", "message"),
    "7.10": _m("tls_required", "fix_auth", "connection"),
    "7.11": _m("tls_required", "fix_auth", "connection"),
    "7.12": _m("policy", "dead_letter", "message"),
    "7.13": _m("policy", "dead_letter", "message"),
    "7.14": _m("policy", "dead_letter", "message"),
    "7.15": _m("throttled", "retry_later", "message"),
    "7.16": _m("message_too_large", "dead_letter", "message"),
    "7.17": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "7.18": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "7.20": _m("auth_failure", "fix_auth", "domain"),
    "7.21": _m("auth_failure", "fix_auth", "domain"),
    "7.22": _m("auth_failure", "fix_auth", "domain"),
    "7.23": _m("auth_failure", "fix_auth", "domain"),
    "7.24": _m("auth_failure", "fix_auth", "domain"),
    "7.25": _m("auth_failure", "fix_auth", "ip"),
    "7.26": _m("auth_failure", "fix_auth", "domain"),
    "7.27": _m("dns_failure", "fix_auth", "domain"),
    "7.28": _m("throttled", "retry_slow_down", "ip"),
    "7.29": _m("auth_failure", "fix_auth", "domain"),
    "7.30": _m("tls_required", "fix_auth", "connection"),
}
# Where the temporary (4.x.x) reading of a code differs from the permanent one.
_REGISTRY_TEMPORARY: dict[str, _Meaning] = {
    "1.1": _m("mailbox_unknown", "suppress_recipient", "recipient"),
    "2.1": _m("throttled", "retry_later", "recipient"),  # Gmail, Yahoo: 4.2.1 = receiving too fast
    "4.4": _m("dns_failure", "retry_soon", "domain"),
    "4.6": _m("connection", "retry_soon", "connection"),
    "4.7": _m("connection", "retry_soon", "connection"),
    "5.0": _m("connection", "retry_soon", "connection"),
    "5.1": _m("connection", "retry_soon", "connection"),
    "5.2": _m("connection", "retry_soon", "connection"),
    "5.4": _m("connection", "retry_soon", "connection"),
    "5.5": _m("connection", "retry_soon", "connection"),
    "7.1": _m("policy", "retry_soon", "message"),
    "7.3": _m("policy", "retry_soon", "message"),
    "7.7": _m("policy", "retry_soon", "message"),
    "7.8": _m("policy", "retry_soon", "message"),
    "7.9": _m("policy", "retry_soon", "message"),
    "7.12": _m("policy", "retry_soon", "message"),
    "7.13": _m("policy", "retry_soon", "message"),
    "7.14": _m("policy", "retry_soon", "message"),
}

# Basic reply codes (RFC 5321 section 4.2.2/4.2.3) when nothing more specific matched.
_BASIC: dict[int, _Meaning] = {
    421: _m("connection", "retry_soon", "connection"),
    450: _m("other", "retry_soon", "recipient"),
    451: _m("connection", "retry_soon", "connection"),
    452: _m("connection", "retry_soon", "connection"),
    454: _m("connection", "retry_soon", "connection"),
    500: _m("other", "dead_letter", "message"),
    501: _m("other", "dead_letter", "message"),
    502: _m("other", "dead_letter", "message"),
    503: _m("other", "dead_letter", "message"),
    504: _m("other", "dead_letter", "message"),
    530: _m("policy", "dead_letter", "message"),
    535: _m("policy", "dead_letter", "message"),
    550: _m("mailbox_unknown", "suppress_recipient", "recipient"),
    551: _m("mailbox_unknown", "suppress_recipient", "recipient"),
    552: _m("mailbox_full", "retry_later", "recipient"),
    553: _m("mailbox_unknown", "suppress_recipient", "recipient"),
    554: _m("policy", "dead_letter", "message"),
    555: _m("other", "dead_letter", "message"),
}
_BASIC_CLASS: dict[str, _Meaning] = {
    "2": _m("other", "retry_soon", "message"),
    "3": _m("other", "retry_soon", "message"),
    "4": _m("other", "retry_soon", "connection"),
    "5": _m("other", "dead_letter", "message"),
}


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: ReplyRule
    code: int | None
    enh: str | None  # prefix; a leading "." means "any class"
    pattern: _Guarded | None

    def code_fits(self, code: int | None, enhanced: str | None) -> bool:
        if self.code is not None and self.code != code:
            return False
        if self.enh is not None:
            if enhanced is None:
                return False
            probe = enhanced[1:] if self.enh.startswith(".") else enhanced
            if not probe.startswith(self.enh):
                return False
        return True


class _ProviderRules:
    """One provider's rules, compiled, with candidate lists memoised per (code, enhanced)."""

    __slots__ = ("_cache", "rules")

    def __init__(self, rules: tuple[ReplyRule, ...]) -> None:
        self.rules = tuple(
            _CompiledRule(
                r,
                r.code,
                r.enhanced,
                _Guarded(r.pattern) if r.pattern is not None else None,
            )
            for r in rules
        )
        self._cache: dict[tuple[int | None, str | None], tuple[_CompiledRule, ...]] = {}

    def candidates(self, code: int | None, enhanced: str | None) -> tuple[_CompiledRule, ...]:
        key = (code, enhanced)
        found = self._cache.get(key)
        if found is None:
            found = tuple(r for r in self.rules if r.code_fits(code, enhanced))
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = found
        return found

    def first_match(
        self, code: int | None, enhanced: str | None, text: str, low: str, ascii_text: bool
    ) -> ReplyRule | None:
        # Code-filtered lists are short and usually decided by their first rules, so a
        # rule-by-rule walk beats building a one-scan index per (code, enhanced) here.
        for cr in self.candidates(code, enhanced):
            if cr.pattern is None or cr.pattern.search(text, low, ascii_text):
                return cr.rule
        return None


def _retry(action: Action, temporary: bool, given: int | None) -> int | None:
    if given is not None:
        return given
    default = DEFAULT_RETRY_S[action]
    if default is None and temporary and action in ("fix_auth", "fix_content"):
        return _TEMPORARY_FIX_RETRY_S
    return default


def _verdict(
    temporary: bool,
    code: int | None,
    enhanced: str | None,
    provider: str,
    reasons: list[str],
    category: Category,
    action: Action,
    scope: Scope,
    rule: str,
    retry: int | None,
) -> Verdict:
    return Verdict(
        temporary=temporary,
        category=category,
        action=action,
        scope=scope,
        retry_after_s=_retry(action, temporary, retry),
        rule=rule,
        code=code,
        enhanced=enhanced,
        provider=provider,
        reasons=tuple(reasons),
    )


class Classifier:
    """Classify replies with the rules of ``profiles`` (name -> profile; needs "generic")."""

    __slots__ = ("_matcher", "_resolved", "_rules", "_verdicts")

    def __init__(self, profiles: Mapping[str, ProviderProfile]) -> None:
        self._matcher = ProviderMatcher(profiles)
        # provider string -> (profile name, reason line or None); bounded, see _provider
        self._resolved: dict[str, tuple[str, str | None]] = {}
        self._rules = {name: _ProviderRules(p.rules) for name, p in profiles.items()}
        if GENERIC not in self._rules:
            self._rules[GENERIC] = _ProviderRules(())
        # (provider, code, text, enhanced) -> verdict; bounded, see classify
        self._verdicts: dict[tuple[str | None, int | None, str, str | None], Verdict] = {}

    @property
    def matcher(self) -> ProviderMatcher:
        """The provider matcher built from the same profiles."""
        return self._matcher

    def _provider(self, provider: str) -> tuple[str, str | None]:
        """The profile name for a non-empty ``provider`` string and the reason line saying
        how it was read (None when it is a profile name as given). Memoised per string:
        the profiles never change after construction, and live traffic names few providers.
        """
        found = self._resolved.get(provider)
        if found is None:
            name = self._matcher.resolve(provider)
            given = provider.strip().lower()
            note: str | None = None
            if name == GENERIC and given != GENERIC:
                note = f"unknown provider {provider!r}, using generic"
            elif given != name:
                note = f"provider {provider!r} is {name}"
            found = (name, note)
            if len(self._resolved) >= 4096:
                self._resolved.clear()
            self._resolved[provider] = found
        return found

    def classify(
        self,
        provider: str | None,
        code: int | None,
        text: str,
        enhanced: str | None = None,
    ) -> Verdict:
        """What ``text`` (with optional ``code`` / ``enhanced``) means from ``provider``.

        ``provider`` may be a profile name, a recipient domain or an MX host; unknown or
        None means "generic". Never raises for any text. Memoised: the verdict is a pure
        function of the arguments (the profiles never change after construction) and is
        frozen, and a sender hears the same few reply texts over and over.
        """
        key = (provider, code, text, enhanced)
        found = self._verdicts.get(key)
        if found is None:
            if len(self._verdicts) >= 65536:
                self._verdicts.clear()
            found = self._verdicts[key] = self._classify(provider, code, text, enhanced)
        return found

    def _classify(self, provider: str | None, code: int | None, text: str,
                  enhanced: str | None) -> Verdict:
        """``classify`` without the memo."""
        reasons: list[str] = []
        name = GENERIC
        if provider:
            name, note = self._provider(provider)
            if note is not None:
                reasons.append(note)
        parsed = parse_reply(text, code, enhanced)
        reasons.extend(parsed.reasons)
        code, enh, body = parsed.code, parsed.enhanced, parsed.text
        cls = str(code)[0] if code is not None else ""
        if code is not None:
            temporary = cls != "5" and cls != "2"
        elif enh is not None:
            temporary = enh[0] != "5"
            reasons.append(f"no basic code; temporary from enhanced class {enh[0]}")
        else:
            temporary = True
            reasons.append("no code found; assumed temporary")

        low = body.lower()
        ascii_text = body.isascii()
        # 1. the provider's rules, then generic's (MTA wordings) for everyone
        for owner in (name, GENERIC) if name != GENERIC else (GENERIC,):
            hit = self._rules[owner].first_match(code, enh, body, low, ascii_text)
            if hit is not None:
                reasons.append(f"provider {owner} rule {hit.id} matched")
                return _verdict(
                    temporary,
                    code,
                    enh,
                    name,
                    reasons,
                    hit.category,
                    hit.action,
                    hit.scope,
                    hit.id,
                    hit.retry_after_s,
                )

        # 2. cross-provider text rules
        tr = _TEXT_INDEX.first(body, low, ascii_text, cls)
        if tr is not None:
            reasons.append(f"text rule {tr.id} matched")
            return _verdict(
                temporary, code, enh, name, reasons, tr.category, tr.action, tr.scope, tr.id, None
            )

        # 3. the enhanced status code registry, 4. the basic code, 5. the enhanced class:
        # each ends in a registry meaning and the rule that names it
        meaning: _Meaning | None = None
        rule = "none"
        if enh is not None:
            _, _, sd = enh.partition(".")
            subject = sd.partition(".")[0]
            # a 4.x.x code inside a 5xx reply ("550 4.4.7 QUEUE.Expired") reads as permanent
            table = _REGISTRY_TEMPORARY if enh[0] == "4" and temporary else {}
            meaning = table.get(sd) or _REGISTRY.get(sd)
            key = sd
            if meaning is None and subject in ("4", "6"):
                key = f"{subject}.0"
                meaning = (
                    (table.get(key) or _REGISTRY.get(key)) if subject == "4" else _REGISTRY["6.0"]
                )
            if meaning is not None:
                reasons.append(f"registry X.{key} ({enh})")
                rule = f"rfc3463.X.{key}"
        if meaning is None and code is not None:
            meaning = _BASIC.get(code)
            rule = f"basic.{code}"
            if meaning is None:
                meaning = _BASIC_CLASS[cls]
                rule = f"basic.{cls}xx"
            reasons.append(f"basic code {code}")
        if meaning is None and enh is not None:
            meaning = _BASIC_CLASS.get(enh[0], _BASIC_CLASS["4"])
            rule = f"basic.{enh[0]}xx"
            reasons.append(f"enhanced class {enh[0]} only")
        if meaning is None:
            reasons.append("nothing matched")
            meaning = _Meaning("other", "retry_soon", "connection")
        return _verdict(
            temporary, code, enh, name, reasons,
            meaning.category, meaning.action, meaning.scope, rule, None,
        )
