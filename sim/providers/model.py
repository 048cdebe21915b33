"""One mailbox provider's behaviour as a pure, stateful object.

Owns ``ProviderModel``: given time, session facts and message facts it answers every
SMTP stage (connect, HELO, MAIL, RCPT, end of DATA) with the provider's reply and
schedules delayed consequences (complaints, DSN bounces, engagement, trap hits).

State, all in plain dicts so batch drivers can read it:
- reputation per scope key (ip, netblock, dkim_domain, spf_domain, link_domain): a score
  in [0, 1] that drifts back to ``initial`` (e-folding ``recovery_s``), rises with
  engagement and falls with complaints, unknown users and trap hits;
- sliding windows of accepted mail per scope key; the limit depends on the key's
  reputation tier; the first scope over its limit names the reply (Gmail's 4.7.28
  variants); a duplicate Message-ID quota;
- open connections per source IP, messages per connection, recipients per message;
- daily caps for young IPs (``day0_cap * growth ** age_day``);
- bulk senders: daily volume per organizational sending domain (From domain, else MAIL
  FROM domain); above the provider's threshold its stricter authentication applies
  (Gmail: SPF and DKIM; Outlook.com: SPF, DKIM and aligned DMARC), optionally for good;
- greylisting of (netblock, sender, recipient) triplets; DNSBL listing by trap hits
  per /24 (with longer listings when repeated); scheduled brownouts.

Time (``now``) is always an argument; randomness is the injected ``rng`` (anything with
``random() -> float``: ``random.Random`` or ``numpy.random.Generator``). No sockets, no
asyncio, no wall clock. Mailbox existence is deterministic (``sim.providers.mailboxes``).
"""

from __future__ import annotations

import heapq
import ipaddress
import math
from collections.abc import Iterable
from functools import lru_cache
from statistics import NormalDist
from typing import Protocol

from sim.providers.domains import aligned, org_domain
from sim.providers.facts import Consequence, MessageFacts, Outcome, Reply, Session
from sim.providers.mailboxes import MailboxKind, mailbox_kind, valid_address
from sim.providers.params import RATE_SCOPES, ModelParams
from sim.providers.windows import BucketCounter, SlidingCounter

DAY = 86400.0
_NORMAL = NormalDist()
TIERS = ("low", "medium", "high")


class Uniform(Protocol):
    def random(self) -> float: ...


class _Fmt(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@lru_cache(maxsize=1 << 14)
def netblock_of(ip: str) -> str:
    """The /24 of an IPv4 address or the /64 of an IPv6 address, as text."""
    if ":" not in ip:
        head = ip.rsplit(".", 1)[0]
        return f"{head}.0/24"
    try:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1].lower() if "@" in address else ""


class ProviderModel:
    """A provider's behaviour: call the stage methods in SMTP order with the same session."""

    def __init__(self, params: ModelParams, rng: Uniform, *, start: float = 0.0) -> None:
        self.params = params
        self.name = params.name
        self.rng = rng
        self.start = start
        p = params
        self.rep: dict[str, dict[str, tuple[float, float]]] = {s: {} for s in RATE_SCOPES}
        self.windows: dict[str, SlidingCounter] = {
            s: SlidingCounter(p.rate_window_s) for s in RATE_SCOPES
        }
        self.message_ids = SlidingCounter(p.rate_window_s)
        self.open_connections: dict[str, int] = {}
        self.bulk_volume = BucketCounter(p.bulk_window_s)
        self.bulk_domains: dict[str, float] = {}  # org domain -> when it first went bulk
        self.ip_first_seen: dict[str, float] = {}
        self.daily: dict[str, tuple[int, int]] = {}  # ip -> (day index, accepted)
        self.greylist: dict[tuple[str, str, str], float] = {}  # triplet -> first seen
        self.greylist_passed: dict[tuple[str, str, str], float] = {}  # triplet -> until
        self.trap_hits = SlidingCounter(p.dnsbl_window_s)
        self.listed_until: dict[str, float] = {}
        self.listings: dict[str, list[float]] = {}
        self.pending: list[tuple[float, int, Consequence, tuple[tuple[str, str], ...]]] = []
        self.fired: list[Consequence] = []
        self.collect_fired = True
        self.stats: dict[str, int] = {}
        self._seq = 0
        self._sessions = 0

    # ----------------------------------------------------------------- helpers
    def reply(self, kind: str, **values: str) -> Reply:
        """The provider's reply of ``kind`` with placeholders filled in."""
        base = self.params.replies[kind]
        self.stats[kind] = self.stats.get(kind, 0) + 1
        if "{" not in base.text:
            return base
        values.setdefault("host", self.params.banner_host)
        return Reply(base.code, base.enhanced, base.text.format_map(_Fmt(values)), kind)

    def score(self, scope: str, key: str, now: float) -> float:
        """Reputation of ``key`` in ``scope`` at ``now`` (drifting back to ``initial``)."""
        entry = self.rep[scope].get(key)
        init = self.params.rep_initial
        if entry is None:
            return init
        s, t = entry
        return init + (s - init) * math.exp(-(now - t) / self.params.rep_recovery_s)

    def tier(self, scope: str, key: str, now: float) -> int:
        """0 low, 1 medium, 2 high."""
        s = self.score(scope, key, now)
        lo, hi = self.params.rep_tiers
        return 0 if s < lo else (2 if s >= hi else 1)

    def bump(self, scope: str, key: str, now: float, delta: float) -> None:
        s = min(1.0, max(0.0, self.score(scope, key, now) + delta))
        self.rep[scope][key] = (s, now)

    def set_ip_age(self, ip: str, days: float, now: float) -> None:
        """Declare that ``ip`` first sent to this provider ``days`` days before ``now``."""
        self.ip_first_seen[ip] = now - days * DAY

    def list_netblock(self, netblock: str, until: float) -> None:
        """Put a /24 (e.g. "127.0.0.0/24") on the provider's blocklist until ``until``."""
        self.listed_until[netblock] = until

    def ip_age_days(self, ip: str, now: float) -> int | None:
        first = self.ip_first_seen.get(ip)
        if first is None:
            return 0 if self.params.young_assume_new else None
        return int((now - first) // DAY)

    def daily_cap(self, ip: str, now: float) -> int | None:
        """Today's cap for ``ip`` or None when the IP is not young."""
        age = self.ip_age_days(ip, now)
        p = self.params
        if age is None or age >= p.young_days:
            return None
        return int(p.young_day0_cap * p.young_growth**age)

    def in_brownout(self, now: float) -> bool:
        t = now - self.start
        return any(b.start_s <= t < b.start_s + b.duration_s for b in self.params.brownouts)

    def _lognormal(self, median: float, sigma: float) -> float:
        u = min(max(self.rng.random(), 1e-12), 1 - 1e-12)
        return median * math.exp(sigma * _NORMAL.inv_cdf(u))

    # ----------------------------------------------------------------- stages
    def connect(self, now: float, source_ip: str, *, tls: bool = False) -> tuple[Session, Reply]:
        """A client connects from ``source_ip``: the session and the greeting or refusal."""
        self._apply_due(now)
        self._sessions += 1
        nb = netblock_of(source_ip)
        session = Session(self._sessions, source_ip, nb, now, tls=tls)
        self.ip_first_seen.setdefault(source_ip, now)
        p = self.params
        refusal: Reply | None = None
        if self.in_brownout(now):
            refusal = self.reply("brownout", ip=source_ip)
        elif self.listed_until.get(nb, -math.inf) > now:
            refusal = self.reply("dnsbl_listed", ip=source_ip, netblock=nb)
        elif self.score("ip", source_ip, now) < p.rep_block_below:
            refusal = self.reply("reputation_block", ip=source_ip, netblock=nb)
        elif self.open_connections.get(source_ip, 0) >= p.max_connections_per_ip:
            refusal = self.reply("too_many_connections", ip=source_ip, limit=str(p.max_connections_per_ip))
        if refusal is not None:
            session.closed = True
            return session, refusal
        self.open_connections[source_ip] = self.open_connections.get(source_ip, 0) + 1
        return session, self.reply("banner", ip=source_ip)

    def close(self, session: Session, now: float) -> None:
        """The connection ended (QUIT, drop or refusal); safe to call more than once."""
        if session.closed:
            return
        session.closed = True
        n = self.open_connections.get(session.source_ip, 1) - 1
        if n > 0:
            self.open_connections[session.source_ip] = n
        else:
            self.open_connections.pop(session.source_ip, None)

    def helo(self, session: Session, now: float, name: str) -> Reply:
        session.helo = name
        return self.reply("ok")

    def starttls(self, session: Session, now: float) -> None:
        session.tls = True

    def reset(self, session: Session) -> None:
        session.mail_from = None
        session.recipients = []

    def mail(self, session: Session, now: float, sender: str, size: int = 0) -> Reply:
        """MAIL FROM: TLS requirement, message size, per-connection and daily caps."""
        self._apply_due(now)
        p = self.params
        ip = session.source_ip
        if p.tls_required and not session.tls:
            return self.reply("tls_required", ip=ip)
        if sender and not valid_address(sender):
            return self.reply("bad_address", recipient=sender)
        if size > p.max_message_bytes:
            return self.reply("too_large", size=str(p.max_message_bytes))
        if session.messages >= p.max_messages_per_connection:
            return self.reply("too_many_messages", ip=ip, limit=str(p.max_messages_per_connection))
        cap = self.daily_cap(ip, now)
        if cap is not None:
            day = int((now - self.ip_first_seen.get(ip, now)) // DAY)
            d, n = self.daily.get(ip, (day, 0))
            if d == day and n >= cap:
                return self.reply("daily_cap", ip=ip, limit=str(cap))
        session.mail_from = sender
        session.recipients = []
        return self.reply("ok")

    def rcpt(self, session: Session, now: float, recipient: str) -> Reply:
        """RCPT TO: address syntax, recipient limit, mailbox existence, greylisting."""
        p = self.params
        if not valid_address(recipient):
            return self.reply("bad_address", recipient=recipient)
        if len(session.recipients) >= p.max_recipients_per_message:
            return self.reply("too_many_recipients", limit=str(p.max_recipients_per_message))
        kind = mailbox_kind(recipient, p.unknown_fraction, p.full_fraction)
        if kind in ("unknown", "inactive"):
            self._penalise_unknown(session, now)
            return self.reply("unknown_user" if kind == "unknown" else "inactive_user",
                              recipient=recipient)
        if kind == "full":
            return self.reply("mailbox_full", recipient=recipient)
        if p.greylist_enabled and not self._greylist_pass(session, recipient, now):
            return self.reply("greylisted", recipient=recipient, ip=session.source_ip,
                              domain=domain_of(recipient))
        session.recipients.append(recipient)
        return self.reply("ok")

    def data(self, session: Session, now: float, facts: MessageFacts) -> Outcome:
        """End of DATA: authentication, reputation, rate windows; schedules consequences."""
        self._apply_due(now)
        p = self.params
        ip, nb = session.source_ip, session.netblock
        recipients = facts.recipients or tuple(session.recipients)
        dkim_ok = facts.dkim_domain is not None
        if p.auth_require != "none":
            spf_ok = facts.spf_pass
            passed = (dkim_ok or spf_ok) if p.auth_require == "spf_or_dkim" else (dkim_ok and spf_ok)
            if not passed:
                return Outcome(self.reply("unauthenticated", ip=ip,
                                          domain=facts.spf_domain or domain_of(facts.mail_from)))
        if p.bulk_threshold and p.bulk_require != "none":
            refusal = self._bulk_check(ip, now, facts, max(1, len(recipients)))
            if refusal is not None:
                return Outcome(refusal)
        if facts.size > p.max_message_bytes:
            return Outcome(self.reply("too_large", size=str(p.max_message_bytes)))
        keys = self._scope_keys(ip, nb, facts)
        for scope, key in keys:
            if scope != "ip" and scope != "netblock" and self.score(scope, key, now) < p.rep_block_below:
                return Outcome(self.reply("reputation_block", ip=ip, domain=key))
        for scope, key in keys:
            limit = p.rate_limits[scope][self.tier(scope, key, now)]
            if self.windows[scope].count(key, now) >= limit:
                return Outcome(self.reply(f"rate_{scope}", ip=ip, netblock=nb, domain=key,
                                          limit=str(limit)))
        if facts.message_id and self.message_ids.count(facts.message_id, now) >= p.message_id_limit:
            return Outcome(self.reply("rate_message_id", ip=ip))
        # accepted
        for scope, key in keys:
            self.windows[scope].add(key, now)
        if facts.message_id:
            self.message_ids.add(facts.message_id, now)
        session.messages += 1
        cap = self.daily_cap(ip, now)
        if cap is not None:
            day = int((now - self.ip_first_seen.get(ip, now)) // DAY)
            d, n = self.daily.get(ip, (day, 0))
            self.daily[ip] = (day, n + 1 if d == day else 1)
        consequences = tuple(
            c for rcpt in recipients for c in self._consequences(session, now, facts, rcpt, keys)
        )
        for c in consequences:
            self._schedule(c, keys)
        self._apply_due(now)
        return Outcome(self.reply("accepted", ip=ip), consequences)

    def is_bulk(self, domain: str, now: float) -> bool:
        """Whether ``domain``'s organizational domain counts as a bulk sender at ``now``."""
        p = self.params
        org = org_domain(domain)
        if p.bulk_permanent and org in self.bulk_domains:
            return True
        return p.bulk_threshold > 0 and self.bulk_volume.count(org, now) > p.bulk_threshold

    def _bulk_check(self, ip: str, now: float, facts: MessageFacts, n: int) -> Reply | None:
        """Count ``n`` messages for the sending domain; the reply when bulk rules fail."""
        p = self.params
        sending = (facts.from_domain or domain_of(facts.mail_from)).lower()
        org = org_domain(sending)
        if not org:
            return None
        self.bulk_volume.add(org, now, n)
        if not (p.bulk_permanent and org in self.bulk_domains):
            if self.bulk_volume.count(org, now) <= p.bulk_threshold:
                return None
            self.bulk_domains.setdefault(org, now)
        spf_domain = facts.spf_domain or domain_of(facts.mail_from)
        values = {"ip": ip, "domain": sending, "spf_domain": spf_domain,
                  "dkim_domain": facts.dkim_domain or ""}
        if not facts.spf_pass:
            return self.reply("bulk_spf", **values)
        if facts.dkim_domain is None:
            return self.reply("bulk_dkim", **values)
        if p.bulk_require == "spf_dkim_dmarc":
            dmarc = facts.dmarc_record and (
                aligned(spf_domain, sending) or aligned(facts.dkim_domain, sending))
            if not dmarc:
                return self.reply("bulk_dmarc", **values)
        return None

    # ----------------------------------------------------------------- consequences
    def due(self, now: float) -> list[Consequence]:
        """Consequences whose time has come (their reputation effect is applied)."""
        self._apply_due(now)
        out, self.fired = self.fired, []
        return out

    def next_due(self) -> float | None:
        return self.pending[0][0] if self.pending else None

    def _scope_keys(self, ip: str, nb: str, facts: MessageFacts) -> tuple[tuple[str, str], ...]:
        keys: list[tuple[str, str]] = [("ip", ip), ("netblock", nb)]
        if facts.dkim_domain:
            keys.append(("dkim_domain", facts.dkim_domain.lower()))
        spf = facts.spf_domain or domain_of(facts.mail_from)
        if spf:
            keys.append(("spf_domain", spf.lower()))
        keys.extend(("link_domain", d.lower()) for d in dict.fromkeys(facts.link_domains))
        return tuple(keys)

    def _consequences(
        self, session: Session, now: float, facts: MessageFacts, rcpt: str,
        keys: tuple[tuple[str, str], ...],
    ) -> Iterable[Consequence]:
        p = self.params
        kind: MailboxKind = mailbox_kind(rcpt, p.unknown_fraction, p.full_fraction)
        base = {
            "provider": self.name, "recipient": rcpt, "message_id": facts.message_id,
            "source_ip": session.source_ip, "mail_from": facts.mail_from,
            "dkim_domain": facts.dkim_domain, "ref": facts.ref,
        }
        if kind == "trap":
            yield Consequence(kind="trap_hit", at=now, **base)  # type: ignore[arg-type]
            return
        lane = facts.lane if facts.lane in p.complaint_rate else "lifecycle"
        # Draw order is fixed (bounce, complaint, engagement) so seeded runs repeat exactly.
        u_bounce, u_complaint, u_engage = self.rng.random(), self.rng.random(), self.rng.random()
        if kind == "bounce" or u_bounce < p.async_bounce_fraction:
            r = self.reply("bounce_unknown", recipient=rcpt)
            yield Consequence(kind="bounce", at=now + p.async_bounce_delay_s, report=True,
                              status=r.enhanced, text=r.line(), **base)  # type: ignore[arg-type]
            return
        if kind == "complain" or u_complaint < p.complaint_rate[lane]:
            delay = self._lognormal(p.complaint_delay_median_s, p.complaint_delay_sigma)
            yield Consequence(kind="complaint", at=now + delay, report=p.fbl, **base)  # type: ignore[arg-type]
        elif kind == "engaged" or u_engage < p.engagement_rate[lane]:
            delay = self._lognormal(p.engagement_delay_median_s, p.engagement_delay_sigma)
            yield Consequence(kind="engagement", at=now + delay, **base)  # type: ignore[arg-type]

    def _schedule(self, c: Consequence, keys: tuple[tuple[str, str], ...]) -> None:
        self._seq += 1
        heapq.heappush(self.pending, (c.at, self._seq, c, keys))

    def _apply_due(self, now: float) -> None:
        pending = self.pending
        while pending and pending[0][0] <= now:
            at, _, c, keys = heapq.heappop(pending)
            self._apply(c, keys, at)
            if self.collect_fired:
                self.fired.append(c)

    def _apply(self, c: Consequence, keys: tuple[tuple[str, str], ...], at: float) -> None:
        p = self.params
        if c.kind == "complaint":
            delta = -p.rep_complaint_penalty
        elif c.kind == "engagement":
            delta = p.rep_engagement_gain
        elif c.kind == "bounce":
            delta = -p.rep_unknown_penalty
        else:  # trap hit
            delta = -p.rep_trap_penalty
            nb = netblock_of(c.source_ip)
            self.trap_hits.add(nb, at)
            if self.trap_hits.count(nb, at) >= p.dnsbl_trap_threshold and not (
                self.listed_until.get(nb, -math.inf) > at
            ):
                recent = [t for t in self.listings.get(nb, []) if t > at - 30 * DAY]
                recent.append(at)
                self.listings[nb] = recent
                long = len(recent) > p.dnsbl_repeat_count
                self.listed_until[nb] = at + (p.dnsbl_repeat_listing_s if long else p.dnsbl_listing_s)
        for scope, key in keys:
            self.bump(scope, key, at, delta)

    def _penalise_unknown(self, session: Session, now: float) -> None:
        d = -self.params.rep_unknown_penalty
        self.bump("ip", session.source_ip, now, d)
        self.bump("netblock", session.netblock, now, d)
        sender = domain_of(session.mail_from or "")
        if sender:
            self.bump("spf_domain", sender, now, d)

    def _greylist_pass(self, session: Session, recipient: str, now: float) -> bool:
        p = self.params
        triplet = (session.netblock, (session.mail_from or "").lower(), recipient.lower())
        until = self.greylist_passed.get(triplet)
        if until is not None and until > now:
            return True
        first = self.greylist.get(triplet)
        if first is None or now - first > p.greylist_retry_window_s:
            self.greylist[triplet] = now
            return False
        if now - first < p.greylist_delay_s:
            return False
        del self.greylist[triplet]
        self.greylist_passed[triplet] = now + p.greylist_whitelist_s
        return True
