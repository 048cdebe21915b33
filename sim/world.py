"""The SimPy world: provider models, IP pools, sending domains and the engine's Scheduler.

Owns ``World``: it loads the scenario's lab config and policy, builds one
``engine.policy.Scheduler`` (the class itself, imported, never copied) and one
``sim.providers.ProviderModel`` per provider, draws the audience, and runs ONE SimPy driver
process that sleeps until the next arrival slice, ``scheduler.next_wakeup()`` or the next
model consequence, then: forwards feedback, calls ``tick``, takes ``due`` dispatches,
plays each through the provider model's batch entry point (``deliver_batch``: one call per
dispatch, compact reply arrays) and books the replies with ``Scheduler.record_batch``;
arrivals go in with ``Scheduler.submit_many`` (one call per stream x provider per slice);
time-driven decisions come from ``tick_batched`` (runs of expiries as one ``ExpireBatch``,
tallied with numpy). Incidents are a few more processes (``sim.incidents``).
Events are kept column-wise and become a polars frame at the end.

Randomness: ``SeedSequence(seed).spawn(6)`` -> audience, traffic, providers, scheduler,
incidents, spare; two policies run on the same streams see the same list and arrivals.
Must not touch anything under ``engine/`` or ``sim/providers`` beyond their public API.
"""

from __future__ import annotations

import gc
import random
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import polars as pl
import simpy

from engine.config import load_config
from engine.config.lab import LabConfig, LoadedPolicy
from engine.config.loader import load_policy
from engine.errors import ConfigError
from engine.policy import (
    AutomationChange,
    BreakerChange,
    DeadLetter,
    Decision,
    Delivered,
    Expire,
    Result,
    Retry,
    Scheduler,
    Signal,
    Suppress,
)
from engine.policy.classify import Classifier
from engine.policy.params import PolicyParams
from engine.policy.scheduler import BatchRecord, ExpireBatch, tick_batched
from engine.profiles import load_profiles
from sim.audience import AudienceTable, build
from sim.blocklist import Blocklist
from sim.feedback import FeedbackRouter
from sim.incidents import IncidentState, install_brownouts, start_incidents
from sim.providers import MessageFacts, ProviderModel, load_params, netblock_of
from sim.providers.facts import Consequence
from sim.providers.mailboxes import MailboxKind
from sim.scenario import Incident, Scenario
from sim.traffic import Arrivals, Traffic

DAY = 86400.0
MIN_GAP_S = 1.0  # the driver never wakes more often than once a simulated second
CONSEQ_GAP_S = 60.0  # model consequences are drained at most once a simulated minute
# expiries ride along with the next wake-up for any other reason (at the latest the
# next arrival slice): a run of expiries costs no wake of its own
EXPIRY_SLACK_S = 300.0
_EV_COLS = ("ts", "event", "message_id", "recipient", "provider", "pool", "source_ip",
            "lane", "tenant", "sending_domain", "campaign", "attempt", "smtp_code",
            "enhanced_code", "response", "category", "action", "rule", "state", "reason",
            "enqueued_ts", "detail")
_STR_COLS = tuple(c for c in _EV_COLS if c not in ("ts", "enqueued_ts", "attempt", "smtp_code"))
# mailbox kinds (``ProviderModel.mailbox``) as small codes: code k + 1 is _KINDS[k]
_KINDS: tuple[MailboxKind | None, ...] = (*get_args(MailboxKind), None)
_KIND_CODE: dict[MailboxKind | None, int] = {k: i + 1 for i, k in enumerate(_KINDS)}


@dataclass(slots=True)
class Events:
    """Event columns as plain lists (appended per decision, framed once at the end)."""

    cols: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in _EV_COLS})
    enabled: bool = True
    n: int = 0

    def add_many(self, n: int, **values: Any) -> None:
        """``n`` rows at once: each value is a list of ``n`` or one value for every row."""
        self.n += n
        if not self.enabled or n <= 0:
            return
        for name, col in self.cols.items():
            v = values.get(name)
            if isinstance(v, list):
                col.extend(v)
            else:
                col.extend([v] * n)

    def add(self, **values: Any) -> None:
        self.n += 1
        if not self.enabled:
            return
        for name, col in self.cols.items():
            col.append(values.get(name))


def load_lab(scenario: Scenario) -> tuple[LabConfig, PolicyParams]:
    """The lab config with every pool on the scenario's policy, resolved for the core."""
    profiles = load_profiles()
    lab = load_config(scenario.lab, profiles=profiles)
    if scenario.policy is not None:
        file = str(scenario.policy)
        model = load_policy(scenario.policy, profiles=profiles)
        lab = LabConfig(file=lab.file, name=lab.name, tenants=lab.tenants, domains=lab.domains,
                        pools=lab.pools, routes=lab.routes, shaping=lab.shaping,
                        policies={file: LoadedPolicy(file, model)},
                        pool_policy=dict.fromkeys(lab.pools, file), default_policy=file,
                        profiles=lab.profiles)
    else:
        first = lab.default_policy or next(iter(lab.policies))
        lab = LabConfig(file=lab.file, name=lab.name, tenants=lab.tenants, domains=lab.domains,
                        pools=lab.pools, routes=lab.routes, shaping=lab.shaping,
                        policies={first: lab.policies[first]},
                        pool_policy=dict.fromkeys(lab.pools, first), default_policy=first,
                        profiles=lab.profiles)
    return lab, lab.policy_params(None, profiles)


class World:
    """One simulated run. ``run()`` returns the event frame; ``summary()`` the figures."""

    def __init__(self, scenario: Scenario, seed: int, *, run_id: str | None = None,
                 keep_events: bool = True,
                 progress: Callable[[float], None] | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.run_id = run_id or f"{scenario.name}-{seed}"
        self.progress = progress
        self.lab, self.params = load_lab(scenario)
        ss = np.random.SeedSequence(seed).spawn(6)
        self.rng_audience = np.random.default_rng(ss[0])
        self.rng_traffic = np.random.default_rng(ss[1])
        prov_seed = int(ss[2].generate_state(1)[0])
        sched_seed = int(ss[3].generate_state(1)[0])
        self.start = scenario.start
        profiles = self.params.providers
        self.classifier = Classifier(profiles)
        self.scheduler = Scheduler(self.params, random.Random(sched_seed),
                                   classify=self.classifier.classify)
        names = list(dict.fromkeys([*scenario.audience.mix, "generic"]))
        self.models: dict[str, ProviderModel] = {}
        self.model_rngs: dict[str, np.random.Generator] = {}
        domains: dict[str, str] = {}
        for k, name in enumerate(names):
            if name not in profiles:
                raise ConfigError(scenario.file, f"audience.mix.{name}",
                                  f"unknown provider (known: {', '.join(sorted(profiles))})")
            mp = load_params(name)
            self.models[name] = ProviderModel(mp, random.Random(prov_seed + k), start=self.start)
            self.model_rngs[name] = np.random.default_rng([prov_seed, k])
            domains[name] = mp.domains[0] if mp.domains else f"{name}.example"
        install_brownouts(self.models, scenario.incidents)
        gp = self.models["generic"].params
        self.blocklist = Blocklist(gp.dnsbl_trap_threshold, gp.dnsbl_window_s,
                                   gp.dnsbl_listing_s)
        self.pool_ips = {p: spec.source_ips for p, spec in self.params.pools.items()}
        self._age_ips()
        self.audience: AudienceTable = build(scenario.audience, domains, self.rng_audience,
                                             self.start)
        for s in scenario.streams:
            if s.sending_domain not in self.lab.domains:
                raise ConfigError(scenario.file, "traffic.sending_domain",
                                  f"{s.sending_domain!r} is not a domain of {self.lab.file}")
            if s.tenant not in self.lab.tenants:
                raise ConfigError(scenario.file, "traffic.tenant",
                                  f"{s.tenant!r} is not a tenant of {self.lab.file}")
        # per recipient and address variant (live, decayed), the mailbox kind its model
        # gives the address, as a code (0: not asked yet): a pure function of the address,
        # memoised by number instead of by address (``ProviderModel.kind_cache``)
        self._kind_codes = bytearray(2 * len(self.audience))
        self._dies: Any = memoryview(np.ascontiguousarray(self.audience.dies_at).data)
        self.traffic: Arrivals = Traffic(scenario.streams, len(self.audience), self.rng_traffic,
                               self.start)
        self.feedback = FeedbackRouter({n: m.params.fbl for n, m in self.models.items()},
                                       self.start)
        self.incident_state = IncidentState()
        self.events = Events(enabled=keep_events)
        if not keep_events:
            for m in self.models.values():
                m.count_only = frozenset({"engagement"})
        # per message (index = message id), as typed C arrays: a 10-million-message run
        # keeps ~15 bytes a message here instead of ~100 in Python lists of objects
        self.m_stream = array("h")  # stream index
        self.m_rcpt = array("i")  # recipient number
        self.m_enq = array("d")  # enqueued at
        self.m_provk = array("h")  # provider index per message (into ``prov_names``)
        self.prov_names = [*self.audience.providers, "generic"]
        self.m_poolk = array("b")  # pool index of the last dispatch (into ``pool_names``), -1
        self.pool_names = list(self.params.pools)
        self._pool_k = {p: k for k, p in enumerate(self.pool_names)}
        self.m_addr: dict[int, str] = {}
        self.tta: dict[str, array[float]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.codes: dict[str, int] = {}
        self.transitions: dict[str, int] = {"breaker": 0, "automation": 0}
        self.warm_delivered = 0
        self.listed: dict[tuple[str, str], float] = {}
        self.env = simpy.Environment()
        self.wakeups = 0
        self._fed = False
        self._facts: dict[tuple[str, str | None, str], MessageFacts] = {}
        self._warm_pool: dict[str, bool] = {}  # pool -> on a warmup plan

    # -- setup ---------------------------------------------------------------------------
    def _age_ips(self) -> None:
        for pool, spec in self.params.pools.items():
            if spec.warmup_start is not None:
                days = max(0.0, (self.start - spec.warmup_start) / DAY)
            else:
                days = self.scenario.ip_age_days.get(pool, 365.0)
            for ip in spec.source_ips:
                for m in self.models.values():
                    m.set_ip_age(ip, days, self.start)

    def _count(self, provider: str, what: str, n: int = 1) -> None:
        c = self.counts.setdefault(provider, {})
        c[what] = c.get(what, 0) + n

    # -- the driver ----------------------------------------------------------------------
    def run(self) -> pl.DataFrame:
        """Run the scenario to its end; returns the event frame (shared schema)."""
        start_incidents(self.env, self.scenario.incidents, self.start, self.models,
                        self.pool_ips, self.incident_state, self._incident_event)
        self.env.process(self._driver())
        # the run allocates millions of small containers (pending entries, slots) that live
        # until they are consumed and never form cycles: the cyclic collector would only
        # walk them over and over (a few per cent of a long run); it is paused for the run
        # and the one collection at the end finds whatever cycles there were
        paused = gc.isenabled()
        gc.disable()
        try:
            self.env.run(until=self.scenario.duration_s)
        finally:
            if paused:
                gc.enable()
                gc.collect()
        return self.frame() if self.events.enabled else pl.DataFrame()

    def _driver(self) -> Any:
        """Sleep until the next arrival slice, scheduler wake-up or feedback report; model
        consequences (engagements, complaints, async bounces) are drained on their own,
        coalesced to at most one wake per ``CONSEQ_GAP_S``, and only poke the scheduler
        when they fed it a signal -- so the scheduler is never polled message by message."""
        sc = self.scenario
        next_slice = 0.0
        last_progress = -1.0
        sched_at = 0.0
        while True:
            rel = self.env.now
            now = self.start + rel
            poke = rel >= sched_at
            while next_slice <= rel:
                self._arrivals(next_slice, next_slice + sc.step_s)
                next_slice += sc.step_s
                poke = True
            self._fed = False
            self._drain(now)
            if poke or self._fed:
                self._pump(now)
                self.wakeups += 1
            cands = [next_slice, self.feedback.next_report - self.start]
            w = self.scheduler.next_wakeup(expiry_slack_s=EXPIRY_SLACK_S)
            if w is not None:
                cands.append(w - self.start)
            sched_at = max(min(cands), rel + MIN_GAP_S)
            nxt = sched_at
            for m in self.models.values():
                t = m.next_due()
                if t is not None:
                    nxt = min(nxt, max(t - self.start, rel + CONSEQ_GAP_S))
            if self.progress is not None and rel - last_progress >= sc.duration_s / 200:
                last_progress = rel
                self.progress(min(1.0, rel / sc.duration_s))
            yield self.env.timeout(nxt - rel)

    def _arrivals(self, t0: float, t1: float) -> None:
        """Submit one slice's arrivals: one ``submit_many`` per stream batch x provider and
        the enqueued events as columns."""
        sched = self.scheduler
        aud = self.audience
        at_abs = self.start + t0
        names = [*aud.providers, "generic"]
        generic = len(aud.providers)
        for batch in self.traffic.slice(t0, t1):
            s = self.scenario.streams[batch.stream]
            prov_idx = np.where(aud.kind[batch.recipients] == 7, generic,
                                aud.provider[batch.recipients])
            n = len(batch.recipients)
            first = len(self.m_stream)
            self.m_stream.frombytes(np.full(n, batch.stream, dtype=np.int16).tobytes())
            self.m_rcpt.frombytes(batch.recipients.astype(np.int32).tobytes())
            self.m_enq.frombytes(np.full(n, at_abs, dtype=np.float64).tobytes())
            self.m_provk.frombytes(prov_idx.astype(np.int16).tobytes())
            self.m_poolk.frombytes(bytes([0xFF]) * n)  # -1: not dispatched yet
            lane, tenant, dom = s.lane, s.tenant, s.sending_domain
            # the recipients' UTC offsets (None: unknown), so lanes with a send window hold
            # mail until the recipient's local window opens (engine.policy.windows)
            offsets = None if aud.utc_offset is None else aud.utc_offset[batch.recipients]
            for k, c in zip(*np.unique(prov_idx, return_counts=True), strict=True):
                prov = names[int(k)]
                self._count(prov, "messages", int(c))
                where = np.flatnonzero(prov_idx == k)
                if offsets is None:
                    groups: list[tuple[int | None, np.ndarray]] = [(None, where)]
                else:
                    zone = offsets[where]
                    groups = [(int(z), where[zone == z]) for z in np.unique(zone)]
                for offset, members in groups:
                    # ascending ids as an int64 array: ``submit_many`` checks them in bulk
                    ids = array("q", (first + members).astype(np.int64).tobytes())
                    sched.submit_many(ids, lane=lane, tenant=tenant,  # type: ignore[arg-type]
                                      sending_domain=dom, now=at_abs, provider=prov,
                                      utc_offset_min=offset)
                    if self.events.enabled:
                        self.events.add_many(
                            len(ids), ts=at_abs, event="enqueued",
                            message_id=[str(i) for i in ids], provider=prov, lane=lane,
                            tenant=tenant, sending_domain=dom, campaign=s.campaign,
                            enqueued_ts=at_abs)
                    else:
                        self.events.n += len(ids)

    def _drain(self, now: float) -> None:
        """Model consequences and blocklist listings up to ``now`` (no scheduler polling)."""
        quiet = not self.events.enabled
        for m in self.models.values():
            if m.next_due() is None:
                continue
            fired = m.due(now)
            for c in fired:
                self._consequence(c, now)
            if quiet:
                # without events an engagement is only a count: the model totals them
                # (``count_only``) instead of building a Consequence each
                n = m.take_counts().get("engagement", 0)
                if n:
                    self._count(m.name, "engagements", n)
                    self.events.n += n
        self._check_listings(now)

    def _pump(self, now: float) -> None:
        sched = self.scheduler
        for sig in self.feedback.due(now):
            self._decisions(sched.feedback(sig, now), now)
        self._decisions(tick_batched(sched, now), now)
        for d in sched.due(now):
            self._deliver(d, now)
        self._decisions(tick_batched(sched, now), now)

    # -- delivery ------------------------------------------------------------------------
    def _deliver(self, d: Any, now: float) -> None:
        """One dispatch: the model answers it in one batch, the scheduler books it in one
        batch; delivered messages are counted (and their events added) as columns.
        Everything that depends only on the dispatch's kind (message facts, whether the
        pool warms) is cached, so the per-dispatch glue is a few list operations."""
        sched = self.scheduler
        provider = d.provider
        ids = list(d.ids)
        pool = d.pool
        pk = self._pool_k[pool]
        m_poolk = self.m_poolk
        for mid in ids:
            m_poolk[mid] = pk
        if provider in self.incident_state.dns_down:
            text = "DNS lookup failed"
            rec = sched.record_batch(ids, [None] * len(ids), [text] * len(ids), pool=pool,
                                     source_ip=d.source_ip, provider=provider, now=now)
            self._booked(d, rec, now, {}, None)
            return
        model = self.models[provider]
        rcpts, kinds = self._recipients(ids, now, model)
        events = self.events.enabled
        if events:
            self.m_addr.update(zip(ids, rcpts, strict=True))
        dom_name = d.sending_domain
        dkim = None if dom_name in self.incident_state.dkim_broken else dom_name
        fkey = (dom_name, dkim, d.lane)
        facts = self._facts.get(fkey)
        if facts is None:
            dom = self.lab.domains[dom_name]
            facts = self._facts[fkey] = MessageFacts(
                mail_from=f"bounce@{dom.return_path or dom_name}", recipients=(),
                dkim_domain=dkim, spf_domain=dom.return_path, spf_pass=True,
                from_domain=dom_name, lane=d.lane)
        br = model.deliver_batch(
            now, d.source_ip, facts, rcpts, [str(i) for i in ids],
            per_connection=max(1, d.messages_per_connection), rng=self.model_rngs[provider],
            kinds=kinds)
        lines = br.lines
        codes_l: list[int] = br.codes.tolist()
        if len(lines) == 1:
            texts = [lines[0]] * len(ids)
            if int(lines[0][:3]) >= 400:
                self._tally_code(provider, lines[0], br.enhanced[0], len(ids))
        else:
            tid_l: list[int] = br.text_ids.tolist()
            texts = [lines[t] for t in tid_l]
            per_text: dict[int, int] = {}
            for t in tid_l:
                per_text[t] = per_text.get(t, 0) + 1
            for t, c in sorted(per_text.items()):
                if int(lines[t][:3]) >= 400:
                    self._tally_code(provider, lines[t], br.enhanced[t], c)
        rec = sched.record_batch(ids, codes_l, texts, pool=pool, source_ip=d.source_ip,
                                 provider=provider, now=now)
        pos = dict(zip(ids, range(len(ids)), strict=True)) \
            if events or rec.decisions else {}
        self._booked(d, rec, now, pos, (codes_l, texts))

    def _recipients(self, ids: list[int], now: float, model: ProviderModel
                    ) -> tuple[list[str], list[MailboxKind | None]]:
        """The addresses of messages ``ids`` at ``now`` and their mailbox kinds at
        ``model`` (every message of a dispatch goes to one provider's model)."""
        address = self.audience.address
        m_rcpt = self.m_rcpt
        dies = self._dies
        codes = self._kind_codes
        rcpts: list[str] = []
        kinds: list[MailboxKind | None] = []
        for mid in ids:
            r = m_rcpt[mid]
            a = address(r, now)
            # a recipient has two addresses at most: live, and decayed once ``dies_at``
            # has passed (``AudienceTable.address``)
            slot = 2 * r + 1 if dies[r] <= now else 2 * r
            c = codes[slot]
            if c:
                kinds.append(_KINDS[c - 1])
            else:
                k = model.mailbox(a)
                codes[slot] = _KIND_CODE[k]
                kinds.append(k)
            rcpts.append(a)
        return rcpts, kinds

    def _tally_code(self, provider: str, line: str, enhanced: str, n: int) -> None:
        """Count ``n`` replies >= 400 under "<provider> <code> <enhanced>"."""
        key = f"{provider} {line[:3]} {enhanced}".strip()
        self.codes[key] = self.codes.get(key, 0) + n

    def _booked(self, d: Any, rec: BatchRecord, now: float, pos: dict[int, int],
                replies: tuple[list[int], list[str]] | None) -> None:
        """Turn a ``BatchRecord`` into counts, time-to-accept samples and events."""
        delivered = rec.delivered
        if delivered:
            self._count(d.provider, "delivered", len(delivered))
            enq = self.m_enq
            tta = self.tta.get(d.lane)
            if tta is None:
                tta = self.tta[d.lane] = array("d")
            tta.extend([now - enq[i] for i in delivered])
            warm = self._warm_pool.get(d.pool)
            if warm is None:
                spec = self.params.pools.get(d.pool)
                warm = self._warm_pool[d.pool] = spec is not None and spec.warmup is not None
            if warm:
                self.warm_delivered += len(delivered)
            if not self.events.enabled:
                self.events.n += len(delivered)  # the rows a run with events would have
            else:
                streams = self.scenario.streams
                camp = [streams[self.m_stream[i]].campaign for i in delivered]
                k = [pos[i] for i in delivered]
                code_l = list(rec.delivered_codes)
                resp = [replies[1][j] for j in k] if replies else None
                self.events.add_many(
                    len(delivered), ts=now, event="delivered",
                    message_id=[str(i) for i in delivered], provider=d.provider,
                    pool=d.pool, lane=d.lane, tenant=d.tenant, sending_domain=d.sending_domain,
                    campaign=camp, enqueued_ts=[enq[i] for i in delivered],
                    recipient=[self.m_addr.get(i) for i in delivered],
                    source_ip=d.source_ip, smtp_code=code_l, response=resp,
                    enhanced_code=[_enhanced(r) for r in resp] if resp else None,
                    reason=[f"{c} accepted" for c in code_l])
        for dec in rec.decisions:
            mid = getattr(dec, "id", None)
            res: Result | None = None
            if mid is not None:
                j = pos.get(mid)
                code = None if replies is None or j is None else int(replies[0][j])
                text = "DNS lookup failed" if replies is None or j is None else replies[1][j]
                res = Result(id=mid, pool=d.pool, source_ip=d.source_ip,
                             provider=d.provider, code=code, text=text)
            self._decisions([dec], now, res)

    # -- decisions and feedback -------------------------------------------------------------
    def _expired(self, batch: ExpireBatch) -> None:
        """A run of expiries: counts per provider with one ``bincount``, events as columns."""
        names = self.prov_names
        ids_np = np.frombuffer(batch.ids, dtype=np.int64)
        provk = np.frombuffer(self.m_provk, dtype=np.int16)
        per = np.bincount(provk[ids_np], minlength=len(names))
        del provk  # release the buffer: ``m_provk`` grows at the next arrival slice
        for k in np.flatnonzero(per).tolist():
            self._count(names[k], "expired", int(per[k]))
        n = len(batch.ids)
        ev = self.events
        if not ev.enabled:
            ev.n += n
            return
        ids = batch.ids.tolist()
        streams = self.scenario.streams
        st = [streams[self.m_stream[i]] for i in ids]
        m_addr, m_enq = self.m_addr, self.m_enq
        pools = [*self.pool_names, None]  # index -1: never dispatched
        m_poolk, m_provk = self.m_poolk, self.m_provk
        ev.add_many(n, ts=batch.at, event="expired", state=batch.state,
                    reason="; ".join(batch.reasons), message_id=[str(i) for i in ids],
                    provider=[names[m_provk[i]] for i in ids],
                    pool=[pools[m_poolk[i]] for i in ids],
                    lane=[s.lane for s in st], tenant=[s.tenant for s in st],
                    sending_domain=[s.sending_domain for s in st],
                    campaign=[s.campaign for s in st], enqueued_ts=[m_enq[i] for i in ids],
                    recipient=[m_addr.get(i) for i in ids])

    def _decisions(self, decisions: list[Decision] | list[Decision | ExpireBatch], now: float,
                   res: Result | None = None) -> None:
        ev = self.events
        for dec in decisions:
            if isinstance(dec, ExpireBatch):
                self._expired(dec)
                continue
            if isinstance(dec, (BreakerChange, AutomationChange)):
                self.transitions[dec.event_name] += 1
                state = dec.to_state if isinstance(dec, BreakerChange) else dec.state
                ev.add(ts=dec.at, event=dec.event_name, provider=dec.provider, pool=dec.pool,
                       state=state, reason="; ".join(dec.reasons),
                       rule=dec.rule if isinstance(dec, AutomationChange) else None,
                       detail={"factor": round(dec.factor, 6)})
                continue
            mid = dec.id
            prov = self.prov_names[self.m_provk[mid]]
            if not ev.enabled:
                self._tally(dec, mid, prov, res)
                continue
            stream = self.scenario.streams[self.m_stream[mid]]
            pool = self._pool_of(mid)
            common = {"message_id": str(mid), "provider": prov, "pool": pool,
                      "lane": stream.lane, "tenant": stream.tenant,
                      "sending_domain": stream.sending_domain, "campaign": stream.campaign,
                      "enqueued_ts": self.m_enq[mid], "recipient": self.m_addr.get(mid)}
            if res is not None and res.id == mid:
                common["source_ip"] = res.source_ip
                common["smtp_code"] = res.code
                if res.text:
                    common["response"] = res.text
                    parts = res.text.split(" ", 2)
                    if len(parts) > 1 and parts[1][:1].isdigit() and "." in parts[1]:
                        common["enhanced_code"] = parts[1]
            reason = "; ".join(dec.reasons)
            if isinstance(dec, Delivered):
                self._count(prov, "delivered")
                self.tta.setdefault(stream.lane, array("d")).append(dec.at - self.m_enq[mid])
                spec = self.params.pools.get(pool or "")
                if spec is not None and spec.warmup is not None:
                    self.warm_delivered += 1
                ev.add(ts=dec.at, event="delivered", reason=reason, **common)
            elif isinstance(dec, Retry):
                self._count(prov, "deferred")
                ev.add(ts=now, event="deferred", attempt=dec.attempt, reason=reason,
                       detail={"retry_at": round(dec.at, 3)}, **common)
            elif isinstance(dec, Suppress):
                self._count(prov, "bounced")
                ev.add(ts=dec.at, event="bounced", action="suppress_recipient", reason=reason,
                       **common)
            elif isinstance(dec, DeadLetter):
                self._count(prov, "bounced" if res is not None else "dead_lettered")
                ev.add(ts=dec.at, event="dead_lettered", reason=reason, **common)
            elif isinstance(dec, Expire):
                self._count(prov, "expired")
                ev.add(ts=dec.at, event="expired", state=dec.state, reason=reason, **common)
            else:
                self._count(prov, dec.event_name)
                ev.add(ts=dec.at, event=dec.event_name, reason=reason, **common)

    def _tally(self, dec: Decision, mid: int, prov: str, res: Result | None) -> None:
        """``_decisions`` without events: the same counts and time-to-accept samples."""
        ev = self.events
        if isinstance(dec, Expire):
            self._count(prov, "expired")
        elif isinstance(dec, Retry):
            self._count(prov, "deferred")
        elif isinstance(dec, Delivered):
            self._count(prov, "delivered")
            lane = self.scenario.streams[self.m_stream[mid]].lane
            self.tta.setdefault(lane, array("d")).append(dec.at - self.m_enq[mid])
            spec = self.params.pools.get(self._pool_of(mid) or "")
            if spec is not None and spec.warmup is not None:
                self.warm_delivered += 1
        elif isinstance(dec, Suppress):
            self._count(prov, "bounced")
        elif isinstance(dec, DeadLetter):
            self._count(prov, "bounced" if res is not None else "dead_lettered")
        else:
            self._count(prov, dec.event_name)
        ev.n += 1

    def _pool_of(self, mid: int) -> str | None:
        """The pool message ``mid`` was last dispatched through (None: never)."""
        k = self.m_poolk[mid]
        return None if k < 0 else self.pool_names[k]

    def _consequence(self, c: Consequence, now: float) -> None:
        mid = int(c.ref) if c.ref.isdigit() else -1
        pool = (self._pool_of(mid) if mid >= 0 else None) or ""
        common = {"message_id": str(mid) if mid >= 0 else None, "provider": c.provider,
                  "pool": pool, "source_ip": c.source_ip, "recipient": c.recipient}
        sig: Signal | None = None
        if c.kind == "complaint":
            self._count(c.provider, "complaints")
            sig = self.feedback.complaint(pool, c.provider) if pool else None
            self.events.add(ts=c.at, event="complaint", detail={"reported": sig is not None},
                            **common)
        elif c.kind == "bounce":
            self._count(c.provider, "async_bounces")
            sig = self.feedback.bounce(pool, c.provider, c.status) if pool else None
            self.events.add(ts=c.at, event="bounced", enhanced_code=c.status,
                            response=c.text, detail={"async": True}, **common)
        elif c.kind == "engagement":
            self._count(c.provider, "engagements")
            self.events.add(ts=c.at, event="engagement", **common)
        else:
            self._count(c.provider, "trap_hits")
            self.events.add(ts=c.at, event="trap_hit", **common)
            self.blocklist.hit(netblock_of(c.source_ip), c.at, self.models)
        if sig is not None:
            self._fed = True
            self._decisions(self.scheduler.feedback(sig, now), now)

    def _check_listings(self, now: float) -> None:
        """A blocklist monitor: a new listing of one of our /24s becomes an incident
        event and an incident signal to every pool x provider using that /24."""
        for name, m in self.models.items():
            for nb, until in m.listed_until.items():
                if self.listed.get((name, nb)) == until or until <= now:
                    continue
                self.listed[(name, nb)] = until
                self.events.add(ts=now, event="incident", provider=name,
                                reason=f"{nb} listed until {until:.0f}",
                                detail={"netblock": nb, "until": until})
                for pool, ips in self.pool_ips.items():
                    if any(netblock_of(ip) == nb for ip in ips):
                        sig = Signal(kind="incident", pool=pool, provider=name,
                                     reason=f"DNSBL listing of {nb}")
                        self._fed = True
                        self._decisions(self.scheduler.feedback(sig, now), now)

    def _incident_event(self, at: float, inc: Incident, phase: str) -> None:
        self.events.add(ts=at, event="incident", provider=inc.provider, pool=inc.pool,
                        sending_domain=inc.sending_domain, state=phase,
                        reason=f"{inc.kind} {phase}", detail={"kind": inc.kind})

    # -- output --------------------------------------------------------------------------
    def frame(self) -> pl.DataFrame:
        """The events so far in the shared schema (sorted by time, stable)."""
        from engine.eventio import events_frame

        cols = dict(self.events.cols)
        n = len(cols["ts"])
        cols["detail"] = [None if d is None else _json(d) for d in cols["detail"]]
        df = pl.DataFrame(cols, schema_overrides={
            "ts": pl.Float64, "enqueued_ts": pl.Float64, "attempt": pl.Int64,
            "smtp_code": pl.Int64, **{c: pl.Utf8 for c in _STR_COLS}}, strict=False)
        df = df.with_columns(pl.Series("seq", np.arange(n, dtype=np.int64)))
        df = df.sort(["ts", "seq"], maintain_order=True).with_columns(
            pl.Series("seq", np.arange(n, dtype=np.int64)),
            pl.lit("sim").alias("source"), pl.lit(self.run_id).alias("run_id"),
            pl.lit(self.params.version).alias("policy_version"),
            pl.lit(self.scenario.name).alias("scenario"), pl.lit(self.seed).alias("seed"),
            pl.col("recipient").str.split("@").list.last().alias("recipient_domain"))
        return events_frame(df)

    def summary(self) -> dict[str, Any]:
        """Figures of the run (see ``sim.run.summarise``)."""
        from sim.run import summarise

        return summarise(self)


def _enhanced(line: str) -> str | None:
    parts = line.split(" ", 2)
    if len(parts) > 1 and parts[1][:1].isdigit() and "." in parts[1]:
        return parts[1]
    return None


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"))

