"""The asyncio driver of the policy core: spool in, SMTP out, decisions back to the spool.

Owns the loop: take pending recipients from the spool (checking suppressions) and
``submit`` them to the scheduler of the policy their route allows (one ``Scheduler`` per
distinct policy file of the lab: a pool naming its own policy gets its own core); ``tick``
and apply decisions; ``due`` -> mark in flight -> send over pooled connections -> ``record``
-> apply each decision in ONE spool transaction. Time is the wall clock here; the policy core
only ever sees it as an argument.

Staged rollout: a pool with a promotion record (``engine.rollout``, ``HOME/promotion/<pool>.json``
when the runner has a ``home``) runs the record's policy files instead of its configured one,
one ``Scheduler`` per arm (policy file x pool); each message's arm is
``policy_file_for(message_id, pool, record)``. The records are re-read (on mtime change) every
pass, so a new stage takes effect without a restart; a scheduler no longer routed to keeps
running until the recipients it holds are done. Every event the runner writes carries the
``policy_version`` of the scheduler that decided it (what ``inboxlab promote check`` compares).
Must not write promotion records, nor import ``inboxlab`` or ``sim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import random
import ssl
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import LabConfig
from engine.config.lab import LoadedPolicy
from engine.delivery.message import recipient_headers, verp_address
from engine.delivery.mx import Destination, NullMX, Resolver
from engine.delivery.pipeline import SMTPClient, SMTPFailure
from engine.delivery.smtp import ConnectionPool, SendResult
from engine.dkim import DkimSigner, load_signer
from engine.errors import InboxlabError, InputError
from engine.policy.breaker import BreakerChange
from engine.policy.classify import Classifier
from engine.policy.params import PolicyParams, RouteConstraint
from engine.policy.scheduler import (
    Ambiguous,
    DeadLetter,
    Decision,
    Delivered,
    Dispatch,
    Expire,
    Result,
    Retry,
    Scheduler,
    Suppress,
)
from engine.policy.windows import allowed_routes
from engine.rollout import PromotionRecord, RecordReader, policy_file_for, record_path
from engine.spool import Job, Spool

# A recipient's DATA mark is committed this many messages ahead (one transaction per window):
# a crash leaves at most this many never-tried recipients ambiguous rather than resendable.
_MARK_WINDOW = 64
_MIN_SHARE = 32  # a batch is split over more connections only in parts of at least this
_NO_POOL = "\x00none"  # a pool name no lab can define: "this group may not carry this route"


def own_routes(params: PolicyParams, owned: frozenset[str]) -> PolicyParams:
    """``params`` with every route constraint narrowed to the pools in ``owned``.

    A policy group also holds the overflow pools of its pools (``LabConfig.policy_params``);
    narrowing keeps those for overflow only, so the group that owns such a pool stays the
    one that routes to it directly.
    """
    from dataclasses import replace

    narrowed: list[RouteConstraint] = []
    for rc in params.routes:
        pools = tuple(p for p in (rc.pools or tuple(params.pools)) if p in owned)
        narrowed.append(replace(rc, pools=pools or (_NO_POOL,)))
    return replace(params, routes=tuple(narrowed))


class Group:
    """One policy file's scheduler and the pools that run it (``arm``: the pool whose
    promotion record this group is one arm of; None for a configured policy's group)."""

    def __init__(self, name: str, scheduler: Scheduler, owned: frozenset[str],
                 arm: str | None = None) -> None:
        self.name = name
        self.scheduler = scheduler
        self.owned = owned
        self.arm = arm


@functools.lru_cache(maxsize=4096)
def _zone_offset(zone: str, quarter: int) -> int | None:
    # offsets and transitions fall on UTC quarter hours, so one lookup per quarter hour
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        off = dt.datetime.fromtimestamp(quarter * 900, ZoneInfo(zone)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return None if off is None else int(off.total_seconds() // 60)


def utc_offset_min(zone: str | None, now: float) -> int | None:
    """The UTC offset (minutes) of IANA ``zone`` at ``now`` (daylight time included), for the
    core's send windows; None for no zone or an unknown one (windows then never hold)."""
    if not zone:
        return None
    return _zone_offset(zone, int(now // 900))


class Runner:
    """Drives one ``Scheduler`` per policy against one ``Spool``. ``run(stop)`` until set."""

    def __init__(self, config: LabConfig, spool: Spool, *, secret: bytes,
                 resolver: Resolver | None = None, seed: int = 0,
                 clock: Callable[[], float] = time.time, timeout: float = 30.0,
                 tls_context: ssl.SSLContext | None = None,
                 home: str | Path | None = None, node_share: float = 1.0) -> None:
        """``tls_context``: the client context for STARTTLS; None verifies certificates as
        ``ssl.create_default_context()`` does. Tests against the sandbox's self-signed cert
        pass ``engine.delivery.smtp.unverified_tls_context()`` explicitly. ``home``: where
        the promotion records live (None: no rollout, every pool runs its configured
        policy). ``node_share``: this engine node's part of every pool's capacity (1/N when
        N nodes share one queue), so the nodes together keep the pools' limits."""
        from engine.profiles import load_profiles

        if not 0.0 < node_share <= 1.0:
            raise InputError(f"node_share must be in (0, 1], got {node_share!r}")
        self.node_share = node_share

        self.config = config
        self.spool = spool
        self.secret = secret
        self.clock = clock
        profiles = dict(config.profiles) or load_profiles()
        self.classifier = Classifier(profiles)
        self.profiles = profiles
        self.seed = seed
        if not config.pools:
            raise InputError(f"{config.file}: the lab defines no pools")
        self.groups: dict[str, Group] = {}
        # groups no longer routed to (a rollout moved on): stepped until they hold nothing
        self.retired: list[Group] = []
        self.readers: dict[str, RecordReader] = (
            {p: RecordReader(record_path(home, p)) for p in config.pools}
            if home is not None else {})
        self.records: dict[str, PromotionRecord] = {}
        self.rollout_errors: dict[str, str] = {}  # pool -> why its record is not followed
        self._arms: dict[str, tuple[str, ...]] = {}  # pool -> arm policy files in use
        self._arm_cache: dict[tuple[str, str], PolicyParams | str] = {}
        self._choice: dict[tuple[str, str], list[tuple[Group | str, int]]] = {}
        self._allowed: dict[tuple[str, str], frozenset[str]] = {}
        self._layout(initial=True)
        default = config.default_policy
        self.scheduler = (self.groups[default] if default in self.groups
                          else next(iter(self.groups.values()))).scheduler
        self._all_pools = {name: spec for g in self.groups.values()
                           for name, spec in g.scheduler.params.pools.items()}
        self._all_pools = {p: self._all_pools[p] for p in config.pools}
        self._all_routes = config.policy_params(next(iter(config.pools)), profiles).routes
        self.holder: dict[int, Group] = {}
        self._refresh()
        self.resolver = resolver or Resolver(config)
        self.pool = ConnectionPool(timeout=timeout, tls_context=tls_context)
        self.signers: dict[str, list[DkimSigner]] = {}
        base = Path(config.file).parent
        for domain, model in config.domains.items():
            self.signers[domain] = [
                load_signer(domain, k.selector, base / k.key_file, k.algorithm)
                for k in model.dkim]
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        # outcomes not yet written: flushed per session, per loop pass and before any other
        # decision (a crash before the flush leaves them in flight -> recovery decides)
        self._batch: list[tuple[int, str, str | None, dict[str, Any]]] = []

    # -- rollout ----------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Read the promotion records (each reader re-reads only on an mtime/size change) and
        re-lay the groups when the set of arm policy files of any pool changed."""
        if not self.readers:
            return
        records: dict[str, PromotionRecord] = {}
        for pool, reader in self.readers.items():
            rec = reader.get()
            if rec is not None and rec.pool == pool:
                records[pool] = rec
        self.records = records
        arms = {}
        for pool, rec in records.items():
            files = self._arm_files(pool, rec)
            if files:
                arms[pool] = files
        if arms != self._arms:
            self._arms = arms
            self._layout()
        self._apply_shares()

    def _apply_shares(self) -> None:
        """Each arm of a canary uses its traffic share of the pool's capacity (buckets,
        connections, warmup caps): the candidate the stage's share, the current policy the
        rest, so the two schedulers together never send more than the pool may."""
        now = self.clock()
        for pool, files in self._arms.items():
            rec = self.records.get(pool)
            share = rec.canary_share if rec is not None and len(files) > 1 else 0.0
            for k, f in enumerate(files):
                group = self.groups.get(f"{f}@{pool}")
                if group is None:
                    continue
                mine = 1.0 if len(files) == 1 else (share if k == 1 else 1.0 - share)
                group.scheduler.set_share(min(1.0, max(mine, 1e-3)) * self.node_share, now)

    def _arm_files(self, pool: str, rec: PromotionRecord) -> tuple[str, ...]:
        """The policy files ``pool`` runs under ``rec`` (empty: its configured policy, which is
        also the answer when an arm's file cannot be loaded; ``rollout_errors`` says why)."""
        files = [rec.current_policy]
        if rec.state == "canary" and rec.candidate_policy and rec.canary_share > 0:
            files.append(rec.candidate_policy)
        configured = Path(self.config.pool_policy[pool]).resolve()
        if len(files) == 1 and Path(files[0]).resolve() == configured:
            self.rollout_errors.pop(pool, None)
            return ()
        for f in files:
            got = self._arm_params(f, pool)
            if isinstance(got, str):
                self.rollout_errors[pool] = got
                return ()
        self.rollout_errors.pop(pool, None)
        return tuple(files)

    def _arm_params(self, file: str, pool: str) -> PolicyParams | str:
        """``PolicyParams`` of policy ``file`` run by ``pool`` alone (cached), or why not."""
        from dataclasses import replace

        from engine.config.loader import load_policy

        key = (file, pool)
        got = self._arm_cache.get(key)
        if got is None:
            try:
                model = load_policy(file, profiles=self.profiles)
                name = f"{file}@{pool}"
                lab = replace(self.config,
                              policies={**self.config.policies,
                                        name: LoadedPolicy(file, model)},
                              pool_policy={**self.config.pool_policy, pool: name})
                got = own_routes(lab.policy_params(pool, self.profiles), frozenset({pool}))
            except InboxlabError as exc:
                got = f"promotion record of {pool}: cannot run {file}: {exc}"
            self._arm_cache[key] = got
        return got

    def _layout(self, *, initial: bool = False) -> None:
        """(Re)build the groups: one per configured policy file over its pools that follow
        no record, one per arm (policy file x pool) of each pool that does. A group whose
        name and pools are unchanged keeps its scheduler; a replaced one is retired."""
        config = self.config
        wanted: dict[str, tuple[str | None, frozenset[str]]] = {}
        for name in dict.fromkeys(config.pool_policy[p] for p in config.pools):
            owned = frozenset(p for p in config.pools
                              if config.pool_policy[p] == name and p not in self._arms)
            if owned:
                wanted[name] = (None, owned)
        for pool, files in self._arms.items():
            for f in files:
                wanted[f"{f}@{pool}"] = (f, frozenset({pool}))
        groups: dict[str, Group] = {}
        for name, (file, owned) in wanted.items():
            old = self.groups.get(name)
            if old is not None and old.owned == owned:
                groups[name] = old
                continue
            if file is None:
                first = next(p for p in config.pools if p in owned)
                params = own_routes(config.policy_params(first, self.profiles), owned)
            else:
                got = self._arm_params(file, next(iter(owned)))
                assert not isinstance(got, str)  # _arm_files checked it
                params = got
            sched = Scheduler(params, random.Random(f"{self.seed}:{name}"),
                              classify=self.classifier.classify)
            if self.node_share != 1.0:
                sched.set_share(self.node_share, self.clock())
            groups[name] = Group(name, sched, owned, None if file is None else next(iter(owned)))
        if not initial:
            kept = {id(g) for g in groups.values()}
            self.retired += [g for g in self.groups.values() if id(g) not in kept]
            self.retired = [g for g in self.retired if id(g) not in kept]
        self.groups = groups
        self._choice.clear()

    def groups_for_pool(self, pool: str) -> list[Group]:
        """Every group whose scheduler sends through ``pool`` (two during a canary): where
        feedback about that pool belongs."""
        found = [g for g in (*self.groups.values(), *self.retired) if pool in g.owned]
        return list({id(g): g for g in found}.values())

    # -- decisions --------------------------------------------------------------------------
    def apply(self, decisions: list[Decision], extra: dict[int, dict[str, Any]] | None = None,
              group: Group | None = None) -> None:
        """Write decisions to the spool; all of them are written when this returns. ``group``:
        whose scheduler decided them (its policy version goes on every event)."""
        self._apply(decisions, extra, group)
        self.flush()

    def _apply(self, decisions: list[Decision], extra: dict[int, dict[str, Any]] | None = None,
               group: Group | None = None) -> None:
        """``apply`` for the hot path: delivered/deferred outcomes are batched (``flush``),
        any other decision flushes first and is written in its own transaction."""
        version = group.scheduler.params.version if group is not None else None
        for d in decisions:
            info = (extra or {}).get(getattr(d, "id", -1), {})
            if version is not None and "policy_version" not in info:
                info = {**info, "policy_version": version}
            if not isinstance(d, Retry):
                self.holder.pop(getattr(d, "id", -1), None)
            why = "; ".join(getattr(d, "reasons", ()))[:500]
            if isinstance(d, Delivered):
                self._batch.append((d.id, "delivered", "delivered", info))
                continue
            if isinstance(d, Retry):
                self._batch.append((d.id, "deferred", "deferred",
                                    {**info, "next_at": d.at, "reason": why}))
                continue
            self.flush()  # keep the order of what was decided
            if isinstance(d, Suppress):
                self.spool.finish(d.id, "bounced", event="bounced", reason=why, **info)
                job = self.spool.job(d.id)
                self.spool.suppress(job.tenant, job.rcpt, "bounce")
            elif isinstance(d, DeadLetter):
                self.spool.finish(d.id, "dead_lettered", event="dead_lettered", reason=why,
                                  **info)
            elif isinstance(d, Ambiguous):
                self.spool.finish(d.id, "dead_lettered", event="ambiguous", ambiguous=True,
                                  reason=why, **info)
            elif isinstance(d, Expire):
                self.spool.finish(d.id, "expired", event="expired", reason=why, **info)
            elif isinstance(d, BreakerChange):
                self.spool.emit(event="breaker", pool=d.pool, provider=d.provider,
                                state=d.to_state, reason=why, policy_version=version)
            else:
                self.spool.emit(event="automation", pool=d.pool, provider=d.provider,
                                state=d.state, rule=d.rule, reason=why, policy_version=version)

    def flush(self, data_started: list[int] | None = None, mx_host: str | None = None
              ) -> None:
        """Write the batched outcomes (delivered / deferred) in one spool transaction, and in
        it the ``data_started`` marks of recipients about to be sent to ``mx_host``."""
        if self._batch or data_started:
            batch, self._batch = self._batch, []
            self.spool.finish_many(batch, data_started=data_started or (), mx_host=mx_host)

    # -- loop -------------------------------------------------------------------------------
    def intake(self) -> int:
        """Hand queued recipients to the core (suppressed ones end here). Returns how many."""
        n = 0
        pending = self.spool.take_pending()
        blocked = self.spool.suppressed_among((p.tenant, p.rcpt) for p in pending)
        for p in pending:
            if (p.tenant, p.rcpt) in blocked:
                self.spool.move(p.id, "suppressed", event="suppressed",
                                reason="recipient on the suppression list")
                continue
            now = self.clock()
            group = self.group_for(p.id, p.tenant, p.lane, p.public_id)
            try:
                if group is None:
                    raise InputError(f"tenant {p.tenant!r} lane {p.lane}: no pool satisfies "
                                     "its route")
                group.scheduler.submit(p.id, lane=p.lane, tenant=p.tenant,  # type: ignore[arg-type]
                                      sending_domain=p.sending_domain, now=now,
                                      recipient_domain=p.domain, not_before=p.next_at,
                                      expires=p.expires,
                                      utc_offset_min=utc_offset_min(p.timezone, now))
            except InputError as exc:
                self.spool.move(p.id, "expired" if "expires" in str(exc) else "suppressed",
                                event="expired" if "expires" in str(exc) else "suppressed",
                                reason=str(exc), policy_version=(
                                    group.scheduler.params.version if group else None))
                continue
            self.holder[p.id] = group
            n += 1
        return n

    def group_for(self, rid: int, tenant: str, lane: str, message_id: str | None = None
                  ) -> Group | None:
        """The policy group that carries recipient ``rid``: among the groups owning a pool
        the (tenant, lane) route allows, a stable choice weighted by how many allowed pools
        each owns (so traffic spreads over pools as one scheduler would spread it). A pool
        under a promotion record counts on its own; its arm is
        ``policy_file_for(message_id, pool, record)`` (``message_id`` defaults to ``rid``)."""
        key = (tenant, lane)
        options = self._choice.get(key)
        if options is None:
            allowed = self._allowed.get(key)
            if allowed is None:
                allowed = frozenset(allowed_routes(self._all_pools, self._all_routes, tenant,
                                                   lane))  # type: ignore[arg-type]
                self._allowed[key] = allowed
            options = [(g, len(g.owned & allowed)) for g in self.groups.values()
                       if g.arm is None]
            options += [(p, 1) for p in self._arms if p in allowed]
            options = [(g, w) for g, w in options if w > 0]
            self._choice[key] = options
        if not options:
            return None
        total = sum(w for _, w in options)
        pick = ((rid * 2654435761) & 0xFFFFFFFF) % total
        chosen: Group | str = options[-1][0]
        for g, w in options:
            if pick < w:
                chosen = g
                break
            pick -= w
        if isinstance(chosen, Group):
            return chosen
        files = self._arms[chosen]
        file = policy_file_for(str(rid) if message_id is None else message_id, chosen,
                               self.records.get(chosen))
        return self.groups[f"{file if file in files else files[0]}@{chosen}"]

    def step(self) -> float | None:
        """One pass: intake, tick, due -> start sends. Returns the next wake-up time."""
        self.flush()
        self._refresh()
        self.intake()
        wakes: list[float] = []
        if self.retired:
            held = {id(g) for g in self.holder.values()}
            self.retired = [g for g in self.retired if id(g) in held]
        for group in (*self.groups.values(), *self.retired):
            sched = group.scheduler
            now = self.clock()
            self.apply(sched.tick(now), group=group)
            for d in sched.due(now):
                self.spool.start_attempts(d.ids, pool=d.pool, source_ip=d.source_ip)
                task = asyncio.get_running_loop().create_task(self._dispatch(group, d))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            self.apply(sched.tick(self.clock()), group=group)
            wake = sched.next_wakeup()
            if wake is not None:
                wakes.append(wake)
        return min(wakes, default=None)

    async def run(self, stop: asyncio.Event, *, poll: float = 0.2) -> None:
        """Loop until ``stop`` is set, then finish in-flight sends and close connections."""
        while not stop.is_set():
            wake = self.step()
            delay = poll if wake is None else max(0.0, min(poll, wake - self.clock()))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(delay, 0.005))
        await self.drain()

    async def drain(self) -> None:
        """Wait for in-flight sends, then QUIT pooled connections."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        self.flush()
        await self.pool.close()

    # -- sending ----------------------------------------------------------------------------
    async def _dispatch(self, group: Group, d: Dispatch) -> None:
        jobs = self.spool.jobs(d.ids)
        by_dest: dict[Destination, list[Job]] = defaultdict(list)
        where: dict[str, Destination | InputError] = {}
        for job in jobs:
            found = where.get(job.domain)
            if found is None:
                try:
                    dests = self.resolver.cached(job.domain)
                    if dests is None:
                        dests = await asyncio.to_thread(self.resolver.resolve, job.domain)
                    found = dests[0]
                except InputError as exc:
                    found = exc
                where[job.domain] = found
            if isinstance(found, NullMX):  # RFC 7505 3: report it as 556 5.1.10
                self._record(group, d, job, SendResult(None, f"5.1.10 {found}", False, ""),
                             failed=556)
            elif isinstance(found, InputError):
                self._record(group, d, job, SendResult(None, str(found), False, ""),
                             failed=550)
            else:
                by_dest[found].append(job)
        shaping = group.scheduler.params.shaping.get((d.pool, d.provider))
        tls = shaping.tls if shaping is not None else "opportunistic"
        sends = []
        per = max(1, d.messages_per_connection)
        for dest, batch in by_dest.items():
            # as many sessions as the per-connection cap needs, and up to the plan's
            # connection limit when the batch is big enough to share (the pool's semaphore
            # keeps the count per (source IP, MX) at that limit)
            k = max(-(-len(batch) // per),
                    min(max(1, d.max_connections), len(batch) // _MIN_SHARE or 1))
            size = -(-len(batch) // k)
            for i in range(0, len(batch), size):
                sends.append(self._session(group, d, dest, batch[i:i + size], tls))
        await asyncio.gather(*sends)
        self.wake.set()

    async def _session(self, group: Group, d: Dispatch, dest: Destination, jobs: list[Job],
                       tls: str) -> None:
        done: set[int] = set()
        pending: list[tuple[Job, SendResult]] = []
        marked = 0  # jobs[:marked] have data_started committed

        def settle() -> None:
            if pending:
                items = pending[:]
                pending.clear()
                self._record_many(group, d, items)

        def skip_rest(res: SendResult) -> None:
            for rest in jobs:
                if rest.id not in done:
                    done.add(rest.id)
                    pending.append((rest, res))

        async def work(client: SMTPClient) -> int:
            nonlocal marked
            senders = [self._sender(j) for j in jobs]
            last = len(jobs) - 1
            for k, job in enumerate(jobs):
                if k >= marked:
                    # Before any of these DATA commands can complete: one transaction marks
                    # the next window, so after a crash they are ambiguous, never resent.
                    # (the outcomes so far are written in the same transaction, first)
                    settle()
                    marked = min(len(jobs), k + _MARK_WINDOW)
                    self.flush([j.id for j in jobs[k:marked]], dest.host)
                # the next message's MAIL/RCPT/DATA ride behind this content (PIPELINING);
                # its content leaves only after its 354, past the mark check above
                then = (senders[k + 1], [jobs[k + 1].rcpt]) if k < last else None
                res = await self._send_one(client, dest, job, senders[k], then)
                done.add(job.id)
                pending.append((job, res))
                if res.code is None:
                    break
                if res.code == 421:
                    # RFC 5321 3.8: 421 closes the session; as an MTA does, the reply
                    # stands for the rest of this batch (same reason, DATA not started).
                    skip_rest(SendResult(421, res.text, False, dest.host))
                    break
                if res.stage == "mail" and 400 <= res.code < 500:
                    # the server refuses this sender on this session for now (e.g. Postfix
                    # anvil "450 4.7.1 too much mail"): stop here rather than hammer it with
                    # the rest of the batch; those were not tried and come back soon.
                    skip_rest(SendResult(
                        None, f"not tried: session refused MAIL ({res.text[:200]})",
                        False, dest.host))
                    # and end the session: a throttled connection is not reused (Postfix
                    # counts every refused pipelined command as an error on the session and,
                    # past smtpd_soft_error_limit, answers each reply a second late)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.quit(), 5.0)
                    break
            return len(done)

        try:
            await self.pool.session(d.source_ip, dest, max_connections=d.max_connections,
                                    per_connection=d.messages_per_connection, tls=tls,
                                    work=work)
        except (SMTPFailure, OSError, TimeoutError) as exc:
            code = exc.code if isinstance(exc, SMTPFailure) else None
            text = exc.text if isinstance(exc, SMTPFailure) else str(exc)
            skip_rest(SendResult(code, text or type(exc).__name__, False, dest.host))
        skip_rest(SendResult(None, "connection lost", False, dest.host))  # lost mid-batch
        settle()
        self.flush()

    def _sender(self, job: Job) -> str:
        """The VERP envelope sender of ``job``."""
        model = self.config.domains.get(job.sending_domain)
        bounce = (model.return_path if model and model.return_path else job.sending_domain)
        return verp_address(self.secret, job.public_id, job.rcpt, bounce)

    def _render(self, job: Job) -> bytes:
        """``job``'s message as it goes out now: per-recipient headers, DKIM signed."""
        model = self.config.domains.get(job.sending_domain)
        bounce = (model.return_path if model and model.return_path else job.sending_domain)
        now = self.clock()
        head = recipient_headers(
            secret=self.secret, public_id=job.public_id, rid=job.id, tenant=job.tenant,
            lane=job.lane, campaign=job.campaign, sending_domain=job.sending_domain,
            rcpt=job.rcpt, feedback_prefix=model.feedback_id_prefix if model else None,
            unsubscribe_base=model.unsubscribe_base_url if model else None,
            bounce_domain=bounce, now=now)
        signers = self.signers.get(job.sending_domain, ())
        if not signers:
            return head + job.body
        # the first signature covers head + stored body (cached per body), any further one
        # also covers the signatures before it, as sequential signing does
        message = signers[0].sign_parts(head, job.body, timestamp=int(now))
        for signer in signers[1:]:
            message = signer.sign(message, timestamp=int(now))
        return message

    async def _send_one(self, client: SMTPClient, dest: Destination, job: Job,
                        sender: str | None = None,
                        then: tuple[str, list[str]] | None = None) -> SendResult:
        """Send ``job`` on ``client``; ``then``: the envelope sent next on this session."""
        # MAIL, RCPT and DATA in one write when the server offers PIPELINING (RFC 2920);
        # data_started: the content began to leave after 354 (the spool marked it before)
        tx = await client.transaction(sender or self._sender(job), [job.rcpt],
                                      self._render(job), then=then)
        if tx.data_started:
            self.sent += 1
        return SendResult(tx.code, tx.text, tx.data_started, dest.host, tx.stage)

    @staticmethod
    def _info(d: Dispatch, code: int | None, res: SendResult, group: Group | None = None
              ) -> dict[str, Any]:
        return {"code": code, "response": res.text[:500], "pool": d.pool,
                "source_ip": d.source_ip, "provider": d.provider,
                "mx_host": res.mx_host or None,
                "policy_version": group.scheduler.params.version if group else None}

    def _record(self, group: Group, d: Dispatch, job: Job, res: SendResult,
                failed: int | None = None) -> None:
        code = res.code if failed is None else failed
        result = Result(id=job.id, pool=d.pool, source_ip=d.source_ip, provider=d.provider,
                        code=code, text=res.text, data_completed=res.data_started)
        info = {job.id: self._info(d, code, res, group)}
        self._apply(group.scheduler.record(result, self.clock()), info, group)

    def _record_many(self, group: Group, d: Dispatch, items: list[tuple[Job, SendResult]]
                     ) -> None:
        """Record a session's outcomes in order: runs of them through ``record_batch``
        (decision-equivalent to ``record`` each), a reply missing after DATA (ambiguous)
        through ``record``."""
        run: list[tuple[Job, SendResult]] = []
        for job, res in items:
            if res.code is None and res.data_started:
                self._record_run(group, d, run)
                run = []
                self._record(group, d, job, res)
            else:
                run.append((job, res))
        self._record_run(group, d, run)

    def _record_run(self, group: Group, d: Dispatch, run: list[tuple[Job, SendResult]]
                    ) -> None:
        if not run:
            return
        rec = group.scheduler.record_batch(
            [j.id for j, _ in run], [r.code for _, r in run], [r.text for _, r in run],
            pool=d.pool, source_ip=d.source_ip, provider=d.provider, now=self.clock())
        info = {j.id: self._info(d, r.code, r, group) for j, r in run}
        delivered = rec.delivered
        pos = 0
        for mark, dec in zip(rec.marks, rec.decisions, strict=True):
            self._delivered(delivered[pos:mark], info)
            pos = mark
            self._apply([dec], info, group)
        self._delivered(delivered[pos:], info)

    def _delivered(self, ids: list[int], info: dict[int, dict[str, Any]]) -> None:
        """What ``apply`` does for a ``Delivered`` decision, for many ids."""
        holder, batch = self.holder, self._batch
        for rid in ids:
            holder.pop(rid, None)
            batch.append((rid, "delivered", "delivered", info[rid]))
