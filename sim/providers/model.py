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

``deliver_batch`` answers a whole dispatch from one source IP at once; it follows the
same rules as the stage methods, deciding order-dependent limits (rate windows, daily
caps, bulk volume) by counting positions instead of replaying the conversation. Most
dispatches are one message, so its cost is per call: what depends only on (source IP,
facts, params) is memoised (``_Ctx``), a batch whose messages all got one reply skips the
reply table and a one-message result shares read-only arrays, and a scheduled complaint
or engagement waits in ``pending`` as a compact tuple that becomes a ``Consequence``
only when it fires (``count_only`` kinds are then just counted: ``take_counts``).
Its random draws are fixed: ``rng.random((a, 3))`` and ``rng.standard_normal(a)`` per
accepted batch and numpy's exp for delays, so seeded runs repeat bit for bit.

Time (``now``) is always an argument; randomness is the injected ``rng`` (anything with
``random() -> float``: ``random.Random`` or ``numpy.random.Generator``). No sockets, no
asyncio, no wall clock. Mailbox existence is deterministic (``sim.providers.mailboxes``).
It does not touch the scheduler or the world: drivers read its state and call it.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import repeat
from statistics import NormalDist
from typing import Protocol

import numpy as np

from sim.providers.domains import aligned, org_domain
from sim.providers.facts import (
    BatchReplies,
    Consequence,
    ConsequenceKind,
    MessageFacts,
    Outcome,
    Reply,
    Session,
)
from sim.providers.mailboxes import MailboxKind, mailbox_kind, valid_address
from sim.providers.params import RATE_SCOPES, ModelParams
from sim.providers.windows import BucketCounter, SlidingCounter, add_count

DAY = 86400.0
_NORMAL = NormalDist()
TIERS = ("low", "medium", "high")
_CACHE_MAX = 1 << 16  # entries per memo dict before it is cleared
# the mailbox-kind memo is keyed by recipient address: a big list is revisited over a month,
# so it may hold a million addresses (~150 MB) before it starts over
_KIND_CACHE_MAX = 1 << 20


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
        # scheduled consequences: (at, seq, kind, reputation refs, item) where item is the
        # Consequence itself or, for batch complaints/engagements, a compact
        # (base, recipient, ref, report) tuple built into a Consequence only when it fires
        # and is collected (``scheduled()`` materialises them all)
        self.pending = Pending()
        self.fired: list[Consequence] = []
        self.collect_fired = True
        # kinds that ``due`` only counts (in ``fired_counts``, read with ``take_counts``)
        # instead of building Consequence objects: a driver that only totals engagements
        # sets {"engagement"}
        self.count_only: frozenset[str] = frozenset()
        self.fired_counts: dict[str, int] = {}
        self.stats: dict[str, int] = {}
        self._seq = 0
        self._sessions = 0
        # called with (stage, now, source IP, session id, code) for every connect and end of
        # DATA the stage methods answer (a recorder: ``sim.parity.tap_model``); None: nothing
        self.tap: Callable[[str, float, str, int, int], None] | None = None
        # mailbox kind (None: not a valid address) per recipient seen by ``deliver_batch``:
        # a pure function of the address and this model's fractions, so memoised
        self.kind_cache: dict[str, MailboxKind | None] = {}
        # formatted replies by (kind, placeholder values): Reply is frozen, so shared
        self._replies: dict[tuple[object, ...], Reply] = {}
        # scope keys by the facts they are made of (``_scope_keys``)
        self._keys: dict[tuple[object, ...], tuple[tuple[str, str], ...]] = {}
        # (reputation dict, key) pairs per scope-key tuple, for bumps without lookups
        self._refs: dict[tuple[tuple[str, str], ...], _Refs] = {}
        # what ``deliver_batch`` derives from (source_ip, facts) alone, per params object
        self._ctx: dict[tuple[str, int], _Ctx] = {}
        self._ctx_params: ModelParams | None = None

    def mailbox(self, address: str) -> MailboxKind | None:
        """The mailbox kind of ``address`` (None: not a valid address), memoised in
        ``kind_cache`` (a pure function of the address and this model's fractions)."""
        cache = self.kind_cache
        k = cache.get(address, _UNSEEN)
        if k is _UNSEEN:
            if len(cache) >= _KIND_CACHE_MAX:
                cache.clear()
            p = self.params
            k = cache[address] = (mailbox_kind(address, p.unknown_fraction, p.full_fraction)
                                  if valid_address(address) else None)
        return k  # type: ignore[return-value]

    # ----------------------------------------------------------------- helpers
    def reply(self, kind: str, **values: str) -> Reply:
        """The provider's reply of ``kind`` with placeholders filled in."""
        self.stats[kind] = self.stats.get(kind, 0) + 1
        return self._format(kind, values)

    def _format(self, kind: str, values: dict[str, str]) -> Reply:
        """``reply`` without counting it in ``stats``."""
        base = self.params.replies[kind]
        if "{" not in base.text:
            return base
        key = (kind, *values.items())  # the same reply text for the same values: reuse it
        done = self._replies.get(key)
        if done is not None:
            return done
        values.setdefault("host", self.params.banner_host)
        done = Reply(base.code, base.enhanced, base.text.format_map(_Fmt(values)), kind)
        if len(self._replies) >= _CACHE_MAX:
            self._replies.clear()
        self._replies[key] = done
        return done

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
        session, reply = self._connect(now, source_ip, tls)
        if self.tap is not None:
            self.tap("connect", now, source_ip, session.id, reply.code)
        return session, reply

    def _connect(self, now: float, source_ip: str, tls: bool) -> tuple[Session, Reply]:
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
        kind = self.mailbox(recipient)
        if kind is None:
            return self.reply("bad_address", recipient=recipient)
        if len(session.recipients) >= p.max_recipients_per_message:
            return self.reply("too_many_recipients", limit=str(p.max_recipients_per_message))
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
        outcome = self._data(session, now, facts)
        if self.tap is not None:
            self.tap("data", now, session.source_ip, session.id, outcome.reply.code)
        return outcome

    def _data(self, session: Session, now: float, facts: MessageFacts) -> Outcome:
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

    def deliver_batch(self, now: float, source_ip: str, facts: MessageFacts,
                      recipients: Sequence[str], refs: Sequence[str], *,
                      per_connection: int, tls: bool = True,
                      rng: np.random.Generator,
                      kinds: list[MailboxKind | None] | None = None) -> BatchReplies:
        """Answer one dispatch at once: ``recipients[i]`` (one per message, ``refs[i]`` its
        caller handle) sent from ``source_ip`` with ``facts`` as the template (its
        ``recipients`` and ``ref`` are ignored), ``per_connection`` messages per session.

        Connection-level checks (brownout, listing, IP reputation, connections) are judged
        once; RCPT per recipient; the rate windows, daily cap and bulk volume by counting
        positions; accepted messages update the windows once and get their consequences
        drawn from ``rng``. Duplicate Message-IDs are not tracked (every simulated message
        is accepted at most once). Returns compact per-message codes and text ids.

        ``kinds``: the recipients' ``mailbox`` kinds when the caller already knows them (a
        caller that numbers its recipients memoises them cheaper than by address)."""
        return _deliver_batch(self, now, source_ip, facts, recipients, refs, per_connection,
                              tls, rng, kinds)

    # ----------------------------------------------------------------- consequences
    def due(self, now: float) -> list[Consequence]:
        """Consequences whose time has come (their reputation effect is applied); kinds in
        ``count_only`` are left out and counted instead (``take_counts``)."""
        self._apply_due(now)
        if not self.fired:
            return []
        out, self.fired = self.fired, []
        return out

    def next_due(self) -> float | None:
        first = self.pending.first
        return None if first == math.inf else first

    def _scope_keys(self, ip: str, nb: str, facts: MessageFacts) -> tuple[tuple[str, str], ...]:
        memo = (ip, nb, facts.dkim_domain, facts.spf_domain, facts.mail_from,
                facts.link_domains)
        found = self._keys.get(memo)
        if found is None:
            if len(self._keys) >= _CACHE_MAX:
                self._keys.clear()
            found = self._keys[memo] = self._make_scope_keys(ip, nb, facts)
        return found

    def _make_scope_keys(self, ip: str, nb: str,
                         facts: MessageFacts) -> tuple[tuple[str, str], ...]:
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
        kind: MailboxKind = (self.mailbox(rcpt)
                             or mailbox_kind(rcpt, p.unknown_fraction, p.full_fraction))
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
        self.pending.push((c.at, self._seq, c.kind, self._rep_refs(keys), c))

    def _rep_refs(self, keys: tuple[tuple[str, str], ...]) -> _Refs:
        """``keys`` as (reputation dict, key) pairs (memoised: the dicts never change)."""
        found = self._refs.get(keys)
        if found is None:
            if len(self._refs) >= _CACHE_MAX:
                self._refs.clear()
            rep = self.rep
            found = self._refs[keys] = tuple((rep[scope], key) for scope, key in keys)
        return found

    def _apply_due(self, now: float) -> None:
        pending = self.pending
        if pending.first > now:
            return
        p = self.params
        init, recovery = p.rep_initial, p.rep_recovery_s
        deltas = {"complaint": -p.rep_complaint_penalty, "engagement": p.rep_engagement_gain,
                  "bounce": -p.rep_unknown_penalty, "trap_hit": -p.rep_trap_penalty}
        collect, count_only = self.collect_fired, self.count_only
        fired, counts = self.fired, self.fired_counts
        exp = math.exp
        for at, _, kind, refs, item in pending.take(now):
            if kind == "trap_hit":
                self._list_on_traps(item.source_ip if isinstance(item, Consequence)
                                    else item[0][1], at)
            delta = deltas[kind]
            # ``bump`` per scope key, inlined (the same arithmetic, in the same order)
            for d, key in refs:
                e = d.get(key)
                sc = init if e is None else init + (e[0] - init) * exp(-(at - e[1]) / recovery)
                d[key] = (min(1.0, max(0.0, sc + delta)), at)
            if collect:
                if kind in count_only:
                    counts[kind] = counts.get(kind, 0) + 1
                elif isinstance(item, Consequence):
                    fired.append(item)
                else:
                    fired.append(_materialise(kind, at, item))  # type: ignore[arg-type]

    def _list_on_traps(self, source_ip: str, at: float) -> None:
        """A trap hit from ``source_ip`` at ``at``: count it and list the /24 when the
        provider's threshold is reached (longer when listed repeatedly)."""
        p = self.params
        nb = netblock_of(source_ip)
        self.trap_hits.add(nb, at)
        if self.trap_hits.count(nb, at) >= p.dnsbl_trap_threshold and not (
            self.listed_until.get(nb, -math.inf) > at
        ):
            recent = [t for t in self.listings.get(nb, []) if t > at - 30 * DAY]
            recent.append(at)
            self.listings[nb] = recent
            long = len(recent) > p.dnsbl_repeat_count
            self.listed_until[nb] = at + (p.dnsbl_repeat_listing_s if long else p.dnsbl_listing_s)

    def take_counts(self) -> dict[str, int]:
        """Fired consequences of the ``count_only`` kinds since the last call, per kind."""
        out, self.fired_counts = self.fired_counts, {}
        return out

    def scheduled(self) -> list[Consequence]:
        """Every consequence still pending, in firing order (built on demand)."""
        return [item if isinstance(item, Consequence) else
                _materialise(kind, at, item)  # type: ignore[arg-type]
                for at, _, kind, _, item in self.pending.ordered()]

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


_LINES: dict[Reply, str] = {}  # Reply.line() memo (Reply is frozen; few distinct texts)


def _line(r: Reply) -> str:
    line = _LINES.get(r)
    if line is None:
        if len(_LINES) >= _CACHE_MAX:
            _LINES.clear()
        line = _LINES[r] = r.line()
    return line


class _Table:
    """Distinct replies of one batch: (code, line) -> text id."""

    __slots__ = ("codes", "enhanced", "ids", "kinds", "lines")

    def __init__(self) -> None:
        self.ids: dict[tuple[int, str], int] = {}
        self.codes: list[int] = []
        self.lines: list[str] = []
        self.enhanced: list[str] = []
        self.kinds: list[str] = []

    def add(self, r: Reply) -> int:
        line = _line(r)
        k = self.ids.get((r.code, line))
        if k is None:
            k = self.ids[(r.code, line)] = len(self.lines)
            self.codes.append(r.code)
            self.lines.append(line)
            self.enhanced.append(r.enhanced)
            self.kinds.append(r.kind)
        return k

    def result(self, tid: list[int], consequences: int = 0) -> BatchReplies:
        tc = self.codes
        codes = np.array([tc[t] for t in tid] if len(tc) > 1 else tc * len(tid),
                         dtype=np.int32)
        return BatchReplies(codes, np.array(tid, dtype=np.int32), self.lines, self.enhanced,
                            self.kinds, consequences)


# one-message results share read-only arrays (building two arrays per dispatch cost more
# than the rest of a one-message batch; a caller that writes into them gets an error)
_ONE_CODE: dict[int, np.ndarray] = {}
_ZERO_ONE = np.zeros(1, dtype=np.int32)
_ZERO_ONE.flags.writeable = False


def _one_code(code: int) -> np.ndarray:
    """The shared read-only one-element array of ``code``."""
    one = _ONE_CODE.get(code)
    if one is None:
        one = _ONE_CODE[code] = np.array([code], dtype=np.int32)
        one.flags.writeable = False
    return one


def _uniform(r: Reply, n: int, consequences: int = 0) -> BatchReplies:
    """The result of a batch whose ``n`` messages all got ``r``."""
    return _uniform_line(_line(r), r.code, r.enhanced, r.kind, n, consequences)


def _uniform_line(line: str, code: int, enhanced: str, kind: str, n: int,
                  consequences: int) -> BatchReplies:
    if n == 1:
        return BatchReplies(_one_code(code), _ZERO_ONE, [line], [enhanced], [kind],
                            consequences)
    return BatchReplies(np.full(n, code, dtype=np.int32), np.zeros(n, dtype=np.int32),
                        [line], [enhanced], [kind], consequences)


# reputation entries to bump: (the scope's dict in ``ProviderModel.rep``, key) per scope key
_Refs = tuple[tuple[dict[str, tuple[float, float]], str], ...]
# what every consequence of one (source_ip, facts) shares:
# (provider, source_ip, mail_from, dkim_domain, message_id)
_Base = tuple[str, str, str, "str | None", str]
# a pending complaint or engagement before it is built: (base, recipient, ref, report)
_Compact = tuple[_Base, str, str, bool]


_Entry = tuple[float, int, str, _Refs, "Consequence | _Compact"]
_BIN_S = 60.0  # width of a ``Pending`` bin
_NO_BIN = -(1 << 62)  # ``Pending.cur_k`` when there is no current bin


class Pending:
    """Scheduled consequences ``(at, seq, kind, refs, item)``, taken in (at, seq) order.

    Entries wait unsorted in bins of ``_BIN_S`` seconds of ``at`` (bin numbers in a small
    heap); the earliest bin is sorted once when it becomes current and read with a cursor
    (an entry pushed into it is inserted in order). The order is exactly that of a heap of
    the entries, for a fraction of the comparisons: a month's run pushes millions of
    entries that each wait minutes to hours. ``first`` is the earliest ``at`` waiting
    (infinity when none)."""

    __slots__ = ("bins", "cur", "cur_k", "first", "keys", "n", "pos")

    def __init__(self) -> None:
        self.bins: dict[int, list[_Entry]] = {}  # later bins, unsorted
        self.keys: list[int] = []  # heap of the bin numbers in ``bins``
        self.cur: list[_Entry] = []  # the current (earliest) bin, sorted; read from ``pos``
        self.cur_k = _NO_BIN  # its bin number
        self.pos = 0
        self.first = math.inf
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def push(self, entry: _Entry) -> None:
        at = entry[0]
        k = int(at // _BIN_S)
        self.n += 1
        if at < self.first:
            self.first = at
        if k == self.cur_k:
            bisect.insort(self.cur, entry, self.pos)
            return
        if k < self.cur_k:  # earlier than the current bin: that bin goes back
            self._park()
        b = self.bins.get(k)
        if b is None:
            b = self.bins[k] = []
            heapq.heappush(self.keys, k)
        b.append(entry)

    def _park(self) -> None:
        """Return what is left of the current bin to ``bins``."""
        rest = self.cur[self.pos:]
        if rest:
            self.bins[self.cur_k] = rest
            heapq.heappush(self.keys, self.cur_k)
        self.cur, self.cur_k, self.pos = [], _NO_BIN, 0

    def _next_bin(self) -> bool:
        """Make the earliest waiting bin current (sorted); False when none is left."""
        if not self.keys:
            self.cur, self.cur_k, self.pos = [], _NO_BIN, 0
            return False
        k = heapq.heappop(self.keys)
        cur = self.bins.pop(k)
        cur.sort()  # (at, seq) is unique: the sort never compares further
        self.cur, self.cur_k, self.pos = cur, k, 0
        return True

    def take(self, now: float) -> list[_Entry]:
        """Remove and return every entry with ``at <= now``, in (at, seq) order."""
        out: list[_Entry] = []
        while True:
            cur, pos = self.cur, self.pos
            if pos >= len(cur):
                # bins hold increasing ranges of ``at`` (``//`` is monotonic)
                if not self._next_bin():
                    break
                continue
            if cur[pos][0] > now:
                break
            j, end = pos + 1, len(cur)
            while j < end and cur[j][0] <= now:
                j += 1
            out.extend(cur[pos:j])
            self.pos = j
            if j < end:
                break
        self.n -= len(out)
        self.first = self.cur[self.pos][0] if self.pos < len(self.cur) else math.inf
        return out

    def ordered(self) -> list[_Entry]:
        """Every entry, in (at, seq) order (nothing removed)."""
        return sorted([*self.cur[self.pos:], *(e for b in self.bins.values() for e in b)])


def _materialise(kind: ConsequenceKind, at: float, item: _Compact) -> Consequence:
    b, recipient, ref, report = item
    return Consequence(kind=kind, at=at, provider=b[0], recipient=recipient,
                       message_id=b[4], source_ip=b[1], mail_from=b[2], dkim_domain=b[3],
                       report=report, ref=ref)


class _Ctx:
    """What a batch derives from (source_ip, facts) alone under one params object: the
    netblock, scope keys and their state dicts, MAIL/DATA verdicts that depend on the facts
    only, the consequence rates, the accepted reply and today's young-IP cap."""

    __slots__ = ("acc_code", "acc_enhanced", "acc_kind", "acc_line", "acc_one", "base",
                 "base_kw",
                 "bulk_fail", "cap", "cap_day", "facts", "ip_rep", "nb", "org", "rates",
                 "refs", "scopes", "sender_bad", "sender_domain", "unauth", "windows")

    def __init__(self, m: ProviderModel, source_ip: str, facts: MessageFacts) -> None:
        p = m.params
        self.facts = facts
        self.nb = nb = netblock_of(source_ip)
        keys = m._scope_keys(source_ip, nb, facts)
        self.refs = m._rep_refs(keys)
        # per scope key: reputation dict, key, window events, window length, rate limits
        # by tier, whether a low score blocks at DATA, scope name
        self.scopes = tuple(
            (m.rep[scope], key, m.windows[scope].events, m.windows[scope].window_s,
             p.rate_limits[scope], scope not in ("ip", "netblock"), scope)
            for scope, key in keys)
        self.windows = tuple((m.windows[scope].events, key) for scope, key in keys)
        self.ip_rep = m.rep["ip"]
        sender = facts.mail_from
        self.sender_bad = bool(sender) and not valid_address(sender)
        self.sender_domain = domain_of(sender)
        self.unauth: dict[str, str] | None = None
        if p.auth_require != "none":
            dkim_ok = facts.dkim_domain is not None
            passed = (dkim_ok or facts.spf_pass) if p.auth_require == "spf_or_dkim" else (
                dkim_ok and facts.spf_pass)
            if not passed:
                self.unauth = {"ip": source_ip,
                               "domain": facts.spf_domain or domain_of(sender)}
        sending = (facts.from_domain or domain_of(sender)).lower()
        self.org = org_domain(sending)
        self.bulk_fail = _bulk_failure(p, source_ip, facts, sending)
        lane = facts.lane if facts.lane in p.complaint_rate else "lifecycle"
        self.rates = (p.async_bounce_fraction, p.complaint_rate[lane], p.engagement_rate[lane])
        self.base: _Base = (m.name, source_ip, sender, facts.dkim_domain, facts.message_id)
        self.base_kw = {"provider": m.name, "source_ip": source_ip, "mail_from": sender,
                        "dkim_domain": facts.dkim_domain, "message_id": facts.message_id}
        acc = m._format("accepted", {"ip": source_ip})
        self.acc_line, self.acc_code = _line(acc), acc.code
        self.acc_enhanced, self.acc_kind = acc.enhanced, acc.kind
        self.acc_one = _one_code(acc.code)
        self.cap_day: int | None = None  # the day index ``cap`` was computed for
        self.cap: int | None = None


def _bulk_failure(p: ModelParams, ip: str, facts: MessageFacts,
                  sending: str) -> tuple[str, dict[str, str]] | None:
    """The reply (kind, values) a bulk sender with these facts gets, None when it passes."""
    spf_domain = facts.spf_domain or domain_of(facts.mail_from)
    values = {"ip": ip, "domain": sending, "spf_domain": spf_domain,
              "dkim_domain": facts.dkim_domain or ""}
    if not facts.spf_pass:
        return "bulk_spf", values
    if facts.dkim_domain is None:
        return "bulk_dkim", values
    if p.bulk_require == "spf_dkim_dmarc":
        dmarc = facts.dmarc_record and (
            aligned(spf_domain, sending) or aligned(facts.dkim_domain, sending))
        if not dmarc:
            return "bulk_dmarc", values
    return None


# RCPT verdict codes of a batch
_R_OK, _R_BAD, _R_UNKNOWN, _R_INACTIVE, _R_FULL, _R_GREY = range(6)
_RCPT_CODE: dict[MailboxKind | None, int] = {
    None: _R_BAD, "unknown": _R_UNKNOWN, "inactive": _R_INACTIVE, "full": _R_FULL}
_RCPT_FAILS = frozenset(_RCPT_CODE)
_UNSEEN = object()
# named consequence kinds of accepted recipients
_K_TRAP, _K_BOUNCE, _K_COMPLAIN, _K_ENGAGED = 1, 2, 3, 4
_NAMED_CODE: dict[MailboxKind | None, int] = {
    "trap": _K_TRAP, "bounce": _K_BOUNCE, "complain": _K_COMPLAIN, "engaged": _K_ENGAGED}


def _context(m: ProviderModel, source_ip: str, facts: MessageFacts) -> _Ctx:
    """The memoised ``_Ctx`` of (source_ip, facts), rebuilt when the params change."""
    if m.params is not m._ctx_params:
        m._ctx.clear()
        m._ctx_params = m.params
    ck = (source_ip, id(facts))
    ctx = m._ctx.get(ck)
    if ctx is None or ctx.facts is not facts:  # the identity check guards a reused id
        if len(m._ctx) >= _CACHE_MAX:
            m._ctx.clear()
        ctx = m._ctx[ck] = _Ctx(m, source_ip, facts)
    return ctx


def _deliver_batch(m: ProviderModel, now: float, source_ip: str, facts: MessageFacts,
                   recipients: Sequence[str], refs: Sequence[str], per_connection: int,
                   tls: bool, rng: np.random.Generator,
                   known: list[MailboxKind | None] | None = None) -> BatchReplies:
    """The body of ``ProviderModel.deliver_batch``. Dispatches are mostly one message
    (a throttled path hands out a token or two per wake), where a numpy call costs more
    than the Python it replaces: per-message work is plain list code (one pass each),
    numpy only draws the randomness (the same calls for any size, so draws repeat), and
    what depends on (source_ip, facts) alone comes from a memo (``_Ctx``)."""
    if m.pending.first <= now:
        m._apply_due(now)
    p = m.params
    ctx = m._ctx.get((source_ip, id(facts)))
    if ctx is None or ctx.facts is not facts or m._ctx_params is not p:
        ctx = _context(m, source_ip, facts)
    n = len(recipients)
    nb = ctx.nb
    per_connection = max(1, per_connection)
    m._sessions += -(-n // per_connection)
    first = m.ip_first_seen.setdefault(source_ip, now)
    stats = m.stats
    if n == 0:
        return _Table().result([])
    # connect (judged once for the batch: same IP, same instant), then MAIL: what is the
    # same for every message
    sender = facts.mail_from
    init, recovery = p.rep_initial, p.rep_recovery_s
    exp = math.exp
    e = ctx.ip_rep.get(source_ip)  # ``score("ip", source_ip, now)`` inlined
    ip_score = init if e is None else init + (e[0] - init) * exp(-(now - e[1]) / recovery)
    refusal: Reply | None = None
    if p.brownouts and m.in_brownout(now):
        refusal = m.reply("brownout", ip=source_ip)
    elif m.listed_until.get(nb, -math.inf) > now:
        refusal = m.reply("dnsbl_listed", ip=source_ip, netblock=nb)
    elif ip_score < p.rep_block_below:
        refusal = m.reply("reputation_block", ip=source_ip, netblock=nb)
    elif m.open_connections.get(source_ip, 0) >= p.max_connections_per_ip:
        refusal = m.reply("too_many_connections", ip=source_ip,
                          limit=str(p.max_connections_per_ip))
    elif p.tls_required and not tls:
        refusal = m.reply("tls_required", ip=source_ip)
    elif ctx.sender_bad:
        refusal = m.reply("bad_address", recipient=sender)
    elif facts.size > p.max_message_bytes:
        refusal = m.reply("too_large", size=str(p.max_message_bytes))
    if refusal is not None:
        stats[refusal.kind] = stats.get(refusal.kind, 0) + n - 1
        return _uniform(refusal, n)
    # RCPT: per recipient (rv[i] == _R_OK is a recipient that passed; rv is None when
    # every recipient passed, the common case)
    kinds: list[MailboxKind | None]
    if known is not None:
        kinds = known
    else:
        cache_get, mailbox = m.kind_cache.get, m.mailbox
        # a cached None (not an address) is looked up twice; everything else once
        if n == 1:
            r0 = recipients[0]
            kinds = [cache_get(r0) or mailbox(r0)]
        else:
            kinds = [cache_get(r) or mailbox(r) for r in recipients]
    rv: list[int] | None = None
    bad_users = 0
    if p.greylist_enabled or not _RCPT_FAILS.isdisjoint(kinds):
        rv_get = _RCPT_CODE.get
        rv = [rv_get(k, _R_OK) for k in kinds]
        if p.greylist_enabled:
            sess = Session(0, source_ip, nb, now, tls=tls, mail_from=sender)
            for i in range(n):
                if rv[i] == _R_OK and not m._greylist_pass(sess, recipients[i], now):
                    rv[i] = _R_GREY
        # reputation cost of unknown recipients (same-sign bumps at one instant add up),
        # charged before DATA as the per-message path charges each before the next DATA
        bad_users = rv.count(_R_UNKNOWN) + rv.count(_R_INACTIVE)
    if bad_users:
        delta = -p.rep_unknown_penalty * bad_users
        m.bump("ip", source_ip, now, delta)
        m.bump("netblock", nb, now, delta)
        if ctx.sender_domain:
            m.bump("spf_domain", ctx.sender_domain, now, delta)
    # DATA, per scope key, in one pass: its score at ``now`` (``ProviderModel.score``
    # inlined: nothing below moves a score), the first scope whose low score blocks, and
    # the room left in its rate window (``SlidingCounter.count`` inlined: dropping
    # expired entries early changes no count)
    block = p.rep_block_below
    lo, hi = p.rep_tiers
    blocked: str | None = None
    rate_limit = n
    rate_reply: tuple[str, str, int] | None = None
    for d, key, events, window_s, limits, judged, scope in ctx.scopes:
        e = d.get(key)
        sc = init if e is None else init + (e[0] - init) * exp(-(now - e[1]) / recovery)
        if judged and sc < block and blocked is None:
            blocked = key
        limit = limits[0 if sc < lo else (2 if sc >= hi else 1)]
        q = events.get(key)
        if q is None:
            count = 0
        else:
            edge = now - window_s
            while q and q[0] <= edge:
                q.popleft()
            if q:
                count = len(q)
            else:
                del events[key]
                count = 0
        room = limit - count if count < limit else 0
        if room < rate_limit:
            rate_limit, rate_reply = room, (scope, key, limit)
    static: Reply | None = None
    if ctx.unauth is not None:
        static = m.reply("unauthenticated", **ctx.unauth)
    elif blocked is not None:
        static = m.reply("reputation_block", ip=source_ip, domain=blocked)
    # daily cap of a young IP (a MAIL-stage refusal once reached); ``first`` is the IP's
    # first sighting, so its age in days is the day index
    day = int((now - first) // DAY)
    if ctx.cap_day != day:
        ctx.cap_day = day
        ctx.cap = (None if day >= p.young_days
                   else int(p.young_day0_cap * p.young_growth**day))
    cap = ctx.cap
    cap_left = n
    if cap is not None:
        d0, done = m.daily.get(source_ip, (day, 0))
        cap_left = max(0, cap - (done if d0 == day else 0))
    # candidates reaching DATA, in order
    cand_idx: Sequence[int] = range(n) if rv is None else [
        i for i in range(n) if rv[i] == _R_OK]
    # messages per connection: the model refuses MAIL after its limit in one session
    over: list[int] = []
    per_limit = p.max_messages_per_connection
    if per_connection > per_limit and static is None and len(cand_idx) > per_limit:
        kept: list[int] = []
        chunk, in_chunk = -1, 0
        for i in cand_idx:
            c = i // per_connection
            if c != chunk:
                chunk, in_chunk = c, 0
            in_chunk += 1
            (over if in_chunk > per_limit else kept).append(i)
        if over:
            over_reply = m.reply("too_many_messages", ip=source_ip, limit=str(per_limit))
            stats["too_many_messages"] += len(over) - 1
            cand_idx = kept
    n_cand = len(cand_idx)
    # bulk senders: volume counts every message reaching DATA, in order
    if static is None and p.bulk_threshold and p.bulk_require != "none":
        static = _bulk_batch(m, now, ctx, n_cand)
    # rate windows: accept while every scope is under its tier's limit
    if static is not None:
        rate_limit = 0
    accepted_n = min(n_cand, rate_limit, cap_left)
    if accepted_n == n:  # every message accepted: one reply, no table
        stats["accepted"] = stats.get("accepted", 0) + n
        _accept(m, now, ctx, source_ip, day, cap, n)
        found = _batch_consequences(m, now, ctx, recipients, refs, kinds, cand_idx, rng)
        if n == 1:
            return BatchReplies(ctx.acc_one, _ZERO_ONE, [ctx.acc_line], [ctx.acc_enhanced],
                                [ctx.acc_kind], found)
        return _uniform_line(ctx.acc_line, ctx.acc_code, ctx.acc_enhanced, ctx.acc_kind, n,
                             found)
    table = _Table()
    tid = [0] * n
    if over:
        t = table.add(over_reply)
        for i in over:
            tid[i] = t
    acc_idx = cand_idx[:accepted_n]
    rest = cand_idx[accepted_n:]
    capped_from = n  # messages from here on got the daily-cap refusal at MAIL
    if cap is not None and cap_left <= rate_limit and n_cand > cap_left:
        capped_from = acc_idx[-1] + 1 if accepted_n else 0
    # reply ids: rcpt failures, then static/rate refusals, then the cap, then accepts
    failed = [] if rv is None else [i for i in range(capped_from) if rv[i] != _R_OK]
    if failed and rv is not None:
        for code_v, kind in ((_R_BAD, "bad_address"), (_R_UNKNOWN, "unknown_user"),
                             (_R_INACTIVE, "inactive_user"), (_R_FULL, "mailbox_full"),
                             (_R_GREY, "greylisted")):
            for i in failed:
                if rv[i] == code_v:
                    addr = recipients[i]
                    tid[i] = table.add(m.reply(kind, recipient=addr, ip=source_ip,
                                               domain=domain_of(addr)))
    if rest:
        if static is not None:
            r = static
        elif rate_reply is not None and rate_limit < cap_left:
            scope, key, limit = rate_reply
            r = m.reply(f"rate_{scope}", ip=source_ip, netblock=nb, domain=key,
                        limit=str(limit))
        else:
            r = m.reply("daily_cap", ip=source_ip, limit=str(cap))
        t = table.add(r)
        for i in rest:
            tid[i] = t
        stats[r.kind] += len(rest) - 1
    if capped_from < n:
        r = m.reply("daily_cap", ip=source_ip, limit=str(cap))
        tid[capped_from:] = [table.add(r)] * (n - capped_from)
        stats[r.kind] += n - capped_from - 1
    if not accepted_n:
        return table.result(tid)
    t = table.add(m.reply("accepted", ip=source_ip))
    for i in acc_idx:
        tid[i] = t
    stats["accepted"] += accepted_n - 1
    _accept(m, now, ctx, source_ip, day, cap, accepted_n)
    return table.result(tid, _batch_consequences(m, now, ctx, recipients, refs, kinds,
                                                 acc_idx, rng))


def _accept(m: ProviderModel, now: float, ctx: _Ctx, source_ip: str, day: int,
            cap: int | None, k: int) -> None:
    """Count ``k`` accepted messages in every scope's window and today's cap."""
    for events, key in ctx.windows:
        q = events.get(key)
        if q is None:
            q = events[key] = deque()
        if k == 1:
            q.append(now)
        else:
            q.extend(repeat(now, k))
    if cap is not None:
        d, done = m.daily.get(source_ip, (day, 0))
        m.daily[source_ip] = (day, (done if d == day else 0) + k)


def _bulk_batch(m: ProviderModel, now: float, ctx: _Ctx, k: int) -> Reply | None:
    """``_bulk_check`` for the ``k`` candidates in order; refuses them all once the
    sending domain is bulk and fails the stricter rules (the first ones, under the
    threshold, never see it: an approximation that only matters on the crossing batch)."""
    p = m.params
    org = ctx.org
    if not org or not k:
        return None
    volume = add_count(m.bulk_volume, org, now, k)
    if not (p.bulk_permanent and org in m.bulk_domains):
        if volume <= p.bulk_threshold:
            return None
        m.bulk_domains.setdefault(org, now)
    if ctx.bulk_fail is None:
        return None
    kind, values = ctx.bulk_fail
    return m.reply(kind, **values)


_VECTOR_FROM = 24  # accepted messages from which numpy classifies the consequences
_NAMED_KINDS = frozenset(_NAMED_CODE)


def _classify(u: np.ndarray, kinds: list[MailboxKind | None], abf: float, cr: float,
              er: float) -> tuple[list[int], list[int], list[int], list[int]]:
    """The per-message rules of ``_batch_consequences`` on arrays: positions of the traps,
    bounces, complaints and engagements (the same comparisons, so the same answers)."""
    bounce = u[:, 0] < abf
    complain = u[:, 1] < cr
    engage = u[:, 2] < er
    if _NAMED_KINDS.isdisjoint(kinds):
        trap = np.zeros(len(kinds), dtype=bool)
    else:
        named = np.array([_NAMED_CODE.get(k, 0) for k in kinds])
        trap = named == _K_TRAP
        bounce |= named == _K_BOUNCE
        complain |= named == _K_COMPLAIN
        engage |= named == _K_ENGAGED
    bounce &= ~trap
    complain &= ~(trap | bounce)
    engage &= ~(trap | bounce | complain)
    return (np.flatnonzero(trap).tolist(), np.flatnonzero(bounce).tolist(),
            np.flatnonzero(complain).tolist(), np.flatnonzero(engage).tolist())


def _batch_consequences(m: ProviderModel, now: float, ctx: _Ctx, recipients: Sequence[str],
                        refs: Sequence[str], kinds: list[MailboxKind | None],
                        acc_idx: Sequence[int], rng: np.random.Generator) -> int:
    """Draw and schedule the accepted messages' consequences (same rules and rates as
    ``_consequences``): three uniforms and one normal per accepted message from ``rng``
    (one call each), scheduled traps first, then bounces, complaints, engagements.
    Complaints and engagements wait in ``pending`` as compact tuples (``_materialise``)."""
    p = m.params
    a = len(acc_idx)
    u_arr = rng.random((a, 3))
    z = rng.standard_normal(a)
    # a big batch is classified on the arrays (``_classify``), a small one on lists
    u: list[list[float]] = u_arr.tolist() if a < _VECTOR_FROM else []
    named_code = _NAMED_CODE
    abf, cr, er = ctx.rates
    pending = m.pending
    i = acc_idx[0]
    named = named_code.get(kinds[i], 0)
    if a == 1 and not (named in (_K_TRAP, _K_BOUNCE) or u[0][0] < abf):
        # most dispatches: one message that is no trap and no bounce (those take the
        # general path below); the same rules without the lists
        _, u1, u2 = u[0]
        if named == _K_COMPLAIN or u1 < cr:
            m._seq += 1
            at = now + p.complaint_delay_median_s * float(
                np.exp(p.complaint_delay_sigma * float(z[0])))
            pending.push((at, m._seq, "complaint", ctx.refs,
                                     (ctx.base, recipients[i], refs[i], p.fbl)))
            if pending.first <= now:
                m._apply_due(now)
            return 1
        elif named == _K_ENGAGED or u2 < er:
            m._seq += 1
            at = now + p.engagement_delay_median_s * float(
                np.exp(p.engagement_delay_sigma * float(z[0])))
            pending.push((at, m._seq, "engagement", ctx.refs,
                                     (ctx.base, recipients[i], refs[i], False)))
            if pending.first <= now:
                m._apply_due(now)
            return 1
        else:
            if pending.first <= now:
                m._apply_due(now)
            return 0
    traps: list[int]
    bounces: list[int]
    compls: list[int]
    engs: list[int]
    if a >= _VECTOR_FROM:
        traps, bounces, compls, engs = _classify(u_arr, [kinds[i] for i in acc_idx],
                                                 abf, cr, er)
    else:
        traps, bounces, compls, engs = [], [], [], []
        for j in range(a):
            named = named_code.get(kinds[acc_idx[j]], 0)
            if named == _K_TRAP:
                traps.append(j)
                continue
            u0, u1, u2 = u[j]
            if named == _K_BOUNCE or u0 < abf:
                bounces.append(j)
            elif named == _K_COMPLAIN or u1 < cr:
                compls.append(j)
            elif named == _K_ENGAGED or u2 < er:
                engs.append(j)
    if not (traps or bounces or compls or engs):
        if pending.first <= now:
            m._apply_due(now)
        return 0
    push = pending.push
    bump_refs = ctx.refs
    base = ctx.base_kw
    for j in traps:
        i = acc_idx[j]
        c = Consequence(kind="trap_hit", at=now, recipient=recipients[i], ref=refs[i],
                        **base)  # type: ignore[arg-type]
        m._seq += 1
        push((now, m._seq, "trap_hit", bump_refs, c))
    for j in bounces:
        i = acc_idx[j]
        r = m.reply("bounce_unknown", recipient=recipients[i])
        c = Consequence(kind="bounce", at=now + p.async_bounce_delay_s, report=True,
                        status=r.enhanced, text=r.line(), recipient=recipients[i],
                        ref=refs[i], **base)  # type: ignore[arg-type]
        m._seq += 1
        push((c.at, m._seq, "bounce", bump_refs, c))
    base_t = ctx.base
    for sel, kind, median, sigma, report in (
            (compls, "complaint", p.complaint_delay_median_s, p.complaint_delay_sigma, p.fbl),
            (engs, "engagement", p.engagement_delay_median_s, p.engagement_delay_sigma,
             False)):
        if not sel:
            continue
        # numpy's exp (math.exp can differ in the last bit): on the selected normals as
        # one array, or one by one for a few (a single element gets the same bits)
        if len(sel) > 3:
            ats: list[float] = (now + median * np.exp(sigma * z[sel])).tolist()
        else:
            ats = [now + median * float(np.exp(sigma * float(z[j]))) for j in sel]
        seq = m._seq
        for j, at in zip(sel, ats, strict=True):
            i = acc_idx[j]
            seq += 1
            push((at, seq, kind, bump_refs, (base_t, recipients[i], refs[i], report)))
        m._seq = seq
    if pending.first <= now:
        m._apply_due(now)
    return len(traps) + len(bounces) + len(compls) + len(engs)
