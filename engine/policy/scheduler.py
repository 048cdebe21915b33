"""The ``Scheduler`` façade of the pure policy core: messages in, dispatches and decisions out.

Owns the in-memory index of messages the policy is responsible for (small ints only: an id,
its queue, deadline, attempt count and last retry delay in typed arrays; FIFOs of slot
numbers per (lane, tenant, sending domain, provider[, UTC offset]) queue), and the loop
that turns tokens into batched ``Dispatch``es and SMTP results into ``Decision``s. Buckets,
lanes, retries, breakers, automation, warmup and windows live in their own modules; this
file wires them. It never does IO, never reads a clock and never draws randomness except
from the injected rng; the driver (asyncio runner or SimPy) calls it and performs the work.

Verbs (a driver calls them in any order with non-decreasing ``now``):
- ``submit(id, ...)``          take responsibility for a message
- ``due(now)``                 batches to send now ("n ids of this queue via pool/IP")
- ``record(result, now)``      an attempt's outcome -> decisions (delivered, retry, ...)
- ``feedback(signal, now)``    complaints, async bounces, engagement, incidents
- ``tick(now)``                time-driven decisions (expiry in every state, breaker and
                               automation steps); returns every decision ``due`` deferred
- ``next_wakeup()``            when to call again (None: nothing pending)
Batch verbs (same meaning as the single verbs called in order, for a simulator's speed):
- ``submit_many(ids, ...)``    ``submit`` for a homogeneous batch (one queue); all or nothing
- ``record_batch(ids, codes, texts, ...)`` ``record`` for one dispatch's outcomes: one
                               classification per distinct (code, text), runs of accepted
                               messages booked together; returns a compact ``BatchRecord``
- ``tick_batched(scheduler, now)`` (a module function) ``tick`` with each run of expiries
                               of one deadline and state as one ``ExpireBatch`` (ids in an
                               array, one reason); expanded in place it is ``tick``'s list
Every submitted id ends in exactly one terminal decision (Delivered, Suppress, DeadLetter,
Expire, Ambiguous), returned exactly once by ``record`` or ``tick`` (or ``tick_batched``).
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, SupportsIndex

from engine.errors import InputError, StateError
from engine.policy.automation import Automation, AutomationChange
from engine.policy.breaker import Breaker, BreakerChange
from engine.policy.bucket import ConnectionPlan, TokenBucket, connection_plan, path_bucket
from engine.policy.lanes import LaneSplitter, strict_order
from engine.policy.params import PolicyParams
from engine.policy.retry import RandomSource, plan_retry
from engine.policy.types import LANES, Lane, ReplyRule, Shaping, Verdict
from engine.policy.warmup import WarmupCounter
from engine.policy.windows import allowed_routes, in_window, next_open

# slot states
_FREE: Final = 0
_QUEUED: Final = 1
_DEFERRED: Final = 2
_INFLIGHT: Final = 3
_ZOMBIE: Final = 4  # ended while a FIFO / timer entry still points at the slot
_STATE_NAMES: Final = {_QUEUED: "queued", _DEFERRED: "deferred", _INFLIGHT: "in flight"}

_WHEEL_S: Final = 16.0  # expiry wheel granularity: queued/deferred mail expires <= 16 s late
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")

Classify = Callable[[str, int | None, str], Verdict]


def _probe() -> None:
    """Only its type matters: a plain Python function unless this module is compiled."""


# this module compiled by mypyc (``engine.native``): its functions are not Python functions
_NATIVE: Final = type(_probe).__name__ != "function"


# -- inputs ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The outcome of one delivery attempt, as the driver saw it.

    ``code``/``text`` is the final SMTP reply (None: no reply, e.g. connection lost);
    ``verdict`` may carry a pre-computed classification; ``data_completed`` is True when
    the final "." was sent (a missing reply after it is ambiguous, never blindly retried).
    """

    id: int
    pool: str
    source_ip: str
    provider: str
    code: int | None
    text: str = ""
    verdict: Verdict | None = None
    data_completed: bool = False


SignalKind = Literal["complaint", "bounce", "engagement", "incident"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """Feedback that arrives outside an SMTP conversation (FBL complaint, async DSN, ...)."""

    kind: SignalKind
    pool: str
    provider: str
    count: int = 1
    reason: str = ""


# -- outputs --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Dispatch:
    """Send ``ids`` (all of one lane x tenant x sending domain x provider queue) via ``pool``
    from ``source_ip``, at most ``messages_per_connection`` per connection over at most
    ``max_connections`` connections."""

    lane: Lane
    tenant: str
    sending_domain: str
    provider: str
    pool: str
    source_ip: str
    ids: tuple[int, ...]
    messages_per_connection: int
    max_connections: int
    reasons: tuple[str, ...]

    # written out (``init=False``; one Dispatch per dispatch): compiled (``engine.native``)
    # the assignments are native slot writes, where the dataclass-generated ``__init__``
    # runs as Python with one ``object.__setattr__`` call per field; interpreted, frozen
    # fields can only be set that way, so that branch does the same
    def __init__(self, *, lane: Lane, tenant: str, sending_domain: str, provider: str,
                 pool: str, source_ip: str, ids: tuple[int, ...], messages_per_connection: int,
                 max_connections: int, reasons: tuple[str, ...]) -> None:
        if _NATIVE:
            self.lane = lane  # type: ignore[misc]
            self.tenant = tenant  # type: ignore[misc]
            self.sending_domain = sending_domain  # type: ignore[misc]
            self.provider = provider  # type: ignore[misc]
            self.pool = pool  # type: ignore[misc]
            self.source_ip = source_ip  # type: ignore[misc]
            self.ids = ids  # type: ignore[misc]
            self.messages_per_connection = messages_per_connection  # type: ignore[misc]
            self.max_connections = max_connections  # type: ignore[misc]
            self.reasons = reasons  # type: ignore[misc]
        else:
            for name, value in (("lane", lane), ("tenant", tenant),
                                ("sending_domain", sending_domain), ("provider", provider),
                                ("pool", pool), ("source_ip", source_ip), ("ids", ids),
                                ("messages_per_connection", messages_per_connection),
                                ("max_connections", max_connections), ("reasons", reasons)):
                object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        """How many messages this dispatch carries."""
        return len(self.ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    """Terminal: the provider accepted the message."""

    id: int
    at: float
    reasons: tuple[str, ...]
    event_name = "delivered"


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Try again at ``at`` (attempt number ``attempt`` has failed)."""

    id: int
    at: float
    attempt: int
    reasons: tuple[str, ...]
    event_name = "deferred"


@dataclass(frozen=True, slots=True, kw_only=True)
class Suppress:
    """Terminal: the recipient is bad; suppress it and drop the message."""

    id: int
    at: float
    reasons: tuple[str, ...]
    event_name = "suppressed"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """Terminal: this message cannot go through as it is; keep it for replay."""

    id: int
    at: float
    reasons: tuple[str, ...]
    event_name = "dead_lettered"


@dataclass(frozen=True, slots=True, kw_only=True)
class Expire:
    """Terminal: the message's TTL ran out while it was in ``state``."""

    id: int
    at: float
    state: str
    reasons: tuple[str, ...]
    event_name = "expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ambiguous:
    """Terminal: DATA completed without a reply; possibly delivered, not retried."""

    id: int
    at: float
    reasons: tuple[str, ...]
    event_name = "ambiguous"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireBatch:
    """Terminal for every id of ``ids`` (in order): the TTL ran out at the same deadline
    while each was in ``state``; the same as one ``Expire`` per id with these fields.
    Only ``tick_batched`` returns it (``tick`` returns the ``Expire`` objects)."""

    ids: array[int]
    at: float
    state: str
    reasons: tuple[str, ...]
    event_name = "expired"

    @property
    def n(self) -> int:
        """How many messages expired."""
        return len(self.ids)

    def expand(self) -> list[Expire]:
        """One ``Expire`` per id, in order."""
        at, state, reasons = self.at, self.state, self.reasons
        return [Expire(id=i, at=at, state=state, reasons=reasons) for i in self.ids]


Terminal = Delivered | Suppress | DeadLetter | Expire | Ambiguous
Decision = Delivered | Retry | Suppress | DeadLetter | Expire | Ambiguous | BreakerChange | AutomationChange
TERMINAL_TYPES: Final = (Delivered, Suppress, DeadLetter, Expire, Ambiguous)


@dataclass(slots=True, init=False)
class BatchRecord:
    """What ``record_batch`` decided, compactly: accepted ids (each a ``Delivered`` at
    ``at`` with reason "<code> accepted") and every other decision, in order.

    ``marks[k]`` is how many delivered ids precede ``decisions[k]``; ``ordered()`` rebuilds
    the exact list the single ``record`` calls would have returned, concatenated.
    """

    at: float
    delivered: list[int] = field(default_factory=list)
    delivered_codes: list[int] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)

    # written out (``init=False``): compiled, a hand-written ``__init__`` is native code,
    # where the dataclass-generated one runs as Python (one BatchRecord per dispatch)
    def __init__(self, at: float, delivered: list[int] | None = None,
                 delivered_codes: list[int] | None = None,
                 decisions: list[Decision] | None = None, marks: list[int] | None = None
                 ) -> None:
        self.at = at
        self.delivered = [] if delivered is None else delivered
        self.delivered_codes = [] if delivered_codes is None else delivered_codes
        self.decisions = [] if decisions is None else decisions
        self.marks = [] if marks is None else marks

    def ordered(self) -> list[Decision]:
        """Every decision in the order the single verbs return them."""
        out: list[Decision] = []
        d = 0
        reasons: dict[int, tuple[str, ...]] = {}
        for mark, dec in [*zip(self.marks, self.decisions, strict=True),
                          (len(self.delivered), None)]:
            while d < mark:
                code = self.delivered_codes[d]
                why = reasons.get(code)
                if why is None:
                    why = reasons[code] = (f"{code} accepted",)
                out.append(Delivered(id=self.delivered[d], at=self.at, reasons=why))
                d += 1
            if dec is not None:
                out.append(dec)
        return out


# -- internal state -------------------------------------------------------------------------
class _Queue:
    """One FIFO of slots: a (lane, tenant, sending domain, provider[, offset]) queue."""

    __slots__ = ("domain", "fifo", "head", "index", "lane", "live", "offset", "provider",
                 "routes", "tenant", "window")

    def __init__(self, index: int, lane: Lane, tenant: str, domain: str, provider: str,
                 offset: int | None, routes: dict[str, tuple[str, ...]],
                 window: tuple[int, int] | None) -> None:
        self.index = index
        self.lane: Lane = lane
        self.tenant = tenant
        self.domain = domain
        self.provider = provider
        self.offset = offset
        self.routes = routes
        self.window = window
        self.fifo = array("I")
        self.head = 0
        self.live = 0


class _Control:
    """Breaker + automation of one pool x provider and the paths (IPs) they govern."""

    __slots__ = ("automation", "breaker", "factor", "index", "paths", "shaping")

    def __init__(self, breaker: Breaker, automation: Automation, shaping: Shaping,
                 index: int = 0) -> None:
        self.index = index  # creation order: time-driven changes come out in this order
        self.breaker = breaker
        self.automation = automation
        self.shaping = shaping
        self.factor = 1.0
        self.paths: list[_Path] = []


class _Path:
    """One pool x source IP x provider: a bucket and maybe a warmup counter."""

    __slots__ = ("bucket", "control", "ip", "memo", "pool", "provider", "warmup")

    def __init__(self, pool: str, ip: str, provider: str, bucket: TokenBucket,
                 control: _Control, warmup: WarmupCounter | None) -> None:
        self.pool = pool
        self.ip = ip
        self.provider = provider
        self.bucket = bucket
        self.control = control
        self.warmup = warmup
        # (factor, its connection plan, its dispatch reason): rebuilt when the factor moves
        self.memo: tuple[float, ConnectionPlan, str] | None = None


def basic_verdict(provider: str, code: int | None, text: str) -> Verdict:
    """A minimal classification used when no classifier is wired (basic + enhanced code)."""
    m = _ENHANCED.search(text or "")
    enhanced = m.group(1) if m else None
    if code is None:
        return Verdict(temporary=True, category="connection", action="retry_soon",
                       scope="connection", retry_after_s=None, rule="basic.connection",
                       provider=provider, reasons=("no reply",))
    if 400 <= code < 500:
        return Verdict(temporary=True, category="other", action="retry_soon", scope="message",
                       retry_after_s=None, rule="basic.4xx", code=code, enhanced=enhanced,
                       provider=provider, reasons=(f"basic class {code // 100}xx",))
    if enhanced is not None and enhanced.startswith(("5.1.1", "5.1.10")):
        return Verdict(temporary=False, category="mailbox_unknown", action="suppress_recipient",
                       scope="recipient", retry_after_s=None, rule="basic.5.1.1", code=code,
                       enhanced=enhanced, provider=provider,
                       reasons=(f"enhanced {enhanced}: bad mailbox",))
    return Verdict(temporary=False, category="other", action="dead_letter", scope="message",
                   retry_after_s=None, rule="basic.5xx", code=code, enhanced=enhanced,
                   provider=provider, reasons=(f"basic class {code // 100}xx",))


class Scheduler:
    """The policy core's one object. See the module docstring for the verbs."""

    def __init__(self, params: PolicyParams, rng: RandomSource,
                 classify: Classify | None = None) -> None:
        self.params = params
        self.rng = rng
        self.classify = classify
        self.salt = rng.getrandbits(64)
        self._now = -math.inf
        # the share of its pools' capacity this scheduler may use (``set_share``): 1.0 unless
        # a canary splits a pool's traffic between two policies' schedulers
        self._share = 1.0
        # per-slot arrays
        self._ids = array("q")
        self._key = array("I")
        self._exp = array("d")
        self._att = array("H")
        self._last = array("f")
        self._state = bytearray()
        self._free = array("I")
        self._slot_of: dict[int, int] = {}
        self._max_id = -1  # the largest id ever submitted
        # queues, timers, expiry wheel
        self._queues: list[_Queue] = []
        self._queue_of: dict[tuple[str, str, str, str, int | None], _Queue] = {}
        self._by_provider: dict[str, dict[Lane, list[_Queue]]] = {}
        # per provider, per path: each lane's queues that path may ever carry, with the
        # pools whose overflow it is (None: on the queue's route); rebuilt on a new queue
        self._reach: dict[str, list[list[tuple[Lane, list[tuple[_Queue, tuple[str, ...] | None]]]]]] = {}
        self._flat: dict[str, list[list[tuple[_Queue, tuple[str, ...] | None]]]] = {}
        # the controls whose breaker or automation may have a time-driven change (every
        # other one is closed and normal); a control joins whenever its state may move
        self._watch: dict[int, _Control] = {}
        self._backlog: dict[str, int] = {}
        self._rotate: dict[tuple[str, Lane], int] = {}
        self._timers: list[tuple[float, int]] = []
        self._wheel: dict[int, array[int]] = {}
        self._wheel_keys: list[int] = []
        # paths, controls, lanes
        self._paths: dict[str, list[_Path]] = {}
        self._controls: dict[tuple[str, str], _Control] = {}
        self._splitters: dict[str, LaneSplitter] = {}
        self._warmups: dict[str, WarmupCounter] = {}
        self._routes: dict[tuple[str, Lane], dict[str, tuple[str, ...]]] = {}
        self._rules: dict[tuple[str, str], ReplyRule] = {
            (name, rule.id): rule
            for name, prof in params.providers.items() for rule in prof.rules
        }
        self._domain_of: dict[str, str] = {
            d.lower(): name for name, prof in params.providers.items() for d in prof.domains
        }
        self._domain_buckets: dict[str, TokenBucket] = {}
        self._tenant_buckets: dict[str, TokenBucket] = {}
        # wheel expiries are kept as ``ExpireBatch`` runs; ``tick`` expands them
        self._outbox: list[Decision | ExpireBatch] = []
        self._hint = math.inf
        self._overflow = any(pool.overflow_to for pool in params.pools.values())
        for name, pool in params.pools.items():
            if pool.warmup:
                plan = params.warmups.get(pool.warmup)
                if plan is None:
                    raise InputError(f"pool {name}: unknown warmup plan {pool.warmup!r}")
                self._warmups[name] = WarmupCounter(plan, pool.warmup_start or 0.0, self.salt)

    # -- introspection ------------------------------------------------------------------
    def __len__(self) -> int:
        """Messages the core is responsible for (queued, deferred or in flight)."""
        return len(self._slot_of)

    def state_of(self, msg_id: int) -> str | None:
        """"queued", "deferred", "in flight", or None when the core does not hold it."""
        slot = self._slot_of.get(msg_id)
        return None if slot is None else _STATE_NAMES[self._state[slot]]

    def set_share(self, share: float, now: float) -> None:
        """Use only ``share`` (0 < share <= 1) of every pool's capacity from ``now`` on: the
        path buckets' rates and bursts, the connections they open and today's warmup caps
        scale by it (on top of breaker and automation factors). A pool whose traffic is
        split between two schedulers (a canary: the candidate policy takes a share, the
        current one the rest) thus never sends more, in sum, than one scheduler would."""
        if not (0.0 < share <= 1.0) or not math.isfinite(share):
            raise InputError(f"share must be in (0, 1], got {share!r}")
        if share == self._share:
            return
        self._share = share
        for ctrl in self._controls.values():
            self._apply_factor(ctrl, now)
        for counter in self._warmups.values():
            counter.share = share

    @property
    def share(self) -> float:
        """The share of its pools' capacity this scheduler uses (``set_share``)."""
        return self._share

    def factor(self, pool: str, provider: str) -> float:
        """Current rate factor (0..1) of a pool x provider (1.0 if never used)."""
        ctrl = self._controls.get((pool, provider))
        return 1.0 if ctrl is None else ctrl.factor

    def breaker_state(self, pool: str, provider: str) -> str:
        """Breaker state of a pool x provider."""
        ctrl = self._controls.get((pool, provider))
        return "closed" if ctrl is None else ctrl.breaker.state

    def connection_plan(self, pool: str, source_ip: str, provider: str) -> ConnectionPlan:
        """How many connections to open to ``provider`` from ``source_ip`` and how many
        messages per connection, at the path's current rate factor."""
        self._ensure_paths(provider)
        ctrl = self._controls[(pool, provider)]
        if source_ip not in self.params.pools[pool].source_ips:
            raise InputError(f"{source_ip} is not a source IP of pool {pool}")
        return connection_plan(ctrl.shaping, ctrl.factor)

    # -- submit ---------------------------------------------------------------------------
    def submit(self, msg_id: int, *, lane: Lane, tenant: str, sending_domain: str, now: float,
               provider: str | None = None, recipient_domain: str | None = None,
               not_before: float | None = None, expires: float | None = None,
               utc_offset_min: int | None = None) -> None:
        """Take responsibility for message ``msg_id``.

        ``provider`` defaults to the profile owning ``recipient_domain`` (else "generic");
        ``expires`` defaults to ``now`` + the lane's TTL. Raises ``InputError`` for an
        unknown lane, a duplicate live id or an already expired message.
        """
        spec = self.params.lanes.get(lane)
        if spec is None:
            raise InputError(f"unknown lane {lane!r} (known: {', '.join(self.params.lanes)})")
        if msg_id in self._slot_of:
            raise InputError(f"message {msg_id} is already held by the scheduler")
        if msg_id < 0:
            raise InputError(f"message id must be >= 0, got {msg_id}")
        if provider is None:
            provider = self._domain_of.get((recipient_domain or "").lower(), "generic")
        deadline = now + spec.ttl_s if expires is None else expires
        if deadline <= now:
            raise InputError(f"message {msg_id} expires at {deadline} <= now {now}")
        offset = utc_offset_min if spec.send_window is not None else None
        qkey = (lane, tenant, sending_domain, provider, offset)
        queue = self._queue_of.get(qkey)
        if queue is None:
            queue = self._new_queue(lane, tenant, sending_domain, provider, offset)
        slot = self._alloc(msg_id, queue.index, deadline)
        if not_before is not None and not_before > now:
            self._state[slot] = _DEFERRED
            heapq.heappush(self._timers, (not_before, slot))
        else:
            self._enqueue(queue, slot)
        self._wheel_add(slot, deadline)

    def submit_many(self, ids: Sequence[int], *, lane: Lane, tenant: str,
                    sending_domain: str, now: float, provider: str | None = None,
                    recipient_domain: str | None = None, not_before: float | None = None,
                    expires: float | None = None, utc_offset_min: int | None = None) -> int:
        """``submit`` every id of ``ids`` (any int sequence, e.g. an ``array`` or numpy
        array) with the same keyword arguments: one queue, one validation. The state after
        it equals that of calling ``submit`` for each id in order. All or nothing: a bad id
        (negative, repeated, already held) raises ``InputError`` before anything changes.
        Returns how many were taken."""
        spec = self.params.lanes.get(lane)
        if spec is None:
            raise InputError(f"unknown lane {lane!r} (known: {', '.join(self.params.lanes)})")
        # an int64 ``array`` is taken as it is (a simulator's bulk path: no per-id boxing)
        id_list = ids if isinstance(ids, array) and ids.typecode == "q" else array(
            "q", [int(i) for i in ids])
        n = len(id_list)
        if n == 0:
            return 0
        slot_of = self._slot_of
        lo, hi = min(id_list), max(id_list)
        if lo < 0:
            raise InputError(f"message id must be >= 0, got {lo}")
        # ids above every id ever taken cannot be held: only repeats need looking for
        fresh_ids = lo > self._max_id
        if len(set(id_list)) != n or (not fresh_ids and not slot_of.keys().isdisjoint(id_list)):
            seen: set[int] = set()
            for i in id_list:
                if i in seen or i in slot_of:
                    raise InputError(f"message {i} is already held by the scheduler")
                seen.add(i)
        if provider is None:
            provider = self._domain_of.get((recipient_domain or "").lower(), "generic")
        deadline = now + spec.ttl_s if expires is None else expires
        if deadline <= now:
            raise InputError(f"message {id_list[0]} expires at {deadline} <= now {now}")
        offset = utc_offset_min if spec.send_window is not None else None
        queue = self._queue_of.get((lane, tenant, sending_domain, provider, offset))
        if queue is None:
            queue = self._new_queue(lane, tenant, sending_domain, provider, offset)
        slots = self._alloc_many(id_list, queue.index, deadline)
        if hi > self._max_id:
            self._max_id = hi
        state = self._state
        slot_arr = array("I", slots)  # extended into two arrays below: converted once
        if not_before is not None and not_before > now:
            for slot in slots:
                state[slot] = _DEFERRED
                heapq.heappush(self._timers, (not_before, slot))
        else:
            for slot in slots:
                state[slot] = _QUEUED
            queue.fifo.extend(slot_arr)
            queue.live += n
            self._backlog[queue.provider] += n
        k = int(deadline // _WHEEL_S)
        bucket = self._wheel.get(k)
        if bucket is None:
            bucket = self._wheel[k] = array("I")
            heapq.heappush(self._wheel_keys, k)
        bucket.extend(slot_arr)
        return n

    def _alloc_many(self, id_list: array[int], key: int, deadline: float) -> list[int]:
        """``_alloc`` for each id in order (free slots are reused last-freed first)."""
        free = self._free
        reuse = min(len(free), len(id_list))
        slots: list[int] = []
        if reuse:
            slots = list(reversed(free[len(free) - reuse:]))
            del free[len(free) - reuse:]
            for slot, msg_id in zip(slots, id_list, strict=False):
                self._ids[slot] = msg_id
                self._key[slot] = key
                self._exp[slot] = deadline
                self._att[slot] = 0
                self._last[slot] = 0.0
        fresh = len(id_list) - reuse
        if fresh:
            base = len(self._ids)
            self._ids.extend(id_list[reuse:])
            # array repeats: one copy each (extending an array by a list adds item by item)
            self._key.extend(array("I", [key]) * fresh)
            self._exp.extend(array("d", [deadline]) * fresh)
            self._att.extend(array("H", [0]) * fresh)
            self._last.extend(array("f", [0.0]) * fresh)
            self._state.extend(bytes(fresh))
            slots.extend(range(base, base + fresh))
        self._slot_of.update(zip(id_list, slots, strict=True))
        return slots

    def _new_queue(self, lane: Lane, tenant: str, domain: str, provider: str,
                   offset: int | None) -> _Queue:
        routes = self._routes.get((tenant, lane))
        if routes is None:
            routes = allowed_routes(self.params.pools, self.params.routes, tenant, lane)
            if not routes:
                raise InputError(f"tenant {tenant!r} lane {lane}: no pool satisfies its route")
            self._routes[(tenant, lane)] = routes
        queue = _Queue(len(self._queues), lane, tenant, domain, provider, offset, routes,
                       self.params.lanes[lane].send_window)
        self._queues.append(queue)
        self._queue_of[(lane, tenant, domain, provider, offset)] = queue
        self._ensure_paths(provider)
        self._by_provider[provider][lane].append(queue)
        self._reach.pop(provider, None)
        self._flat.pop(provider, None)
        return queue

    def _ensure_paths(self, provider: str) -> None:
        if provider in self._paths:
            return
        profile = self.params.providers.get(provider)
        paths: list[_Path] = []
        for pool_name, pool in self.params.pools.items():
            shaping = self.params.shaping.get((pool_name, provider)) or (
                profile.shaping if profile else Shaping())
            ctrl = _Control(Breaker(self.params.breaker, pool_name, provider),
                            Automation(self.params.automation, pool_name, provider), shaping,
                            len(self._controls))
            self._controls[(pool_name, provider)] = ctrl
            self._watch[ctrl.index] = ctrl
            for ip in pool.source_ips:
                path = _Path(pool_name, ip, provider, path_bucket(shaping, self._now_or0()),
                             ctrl, self._warmups.get(pool_name))
                ctrl.paths.append(path)
                paths.append(path)
            if self._share != 1.0:
                self._apply_factor(ctrl, self._now_or0())
        self._paths[provider] = paths
        self._by_provider[provider] = {lane: [] for lane in LANES}
        self._backlog[provider] = 0
        self._splitters[provider] = LaneSplitter(self.params.lanes)

    def _now_or0(self) -> float:
        return self._now if math.isfinite(self._now) else 0.0

    def _alloc(self, msg_id: int, key: int, deadline: float) -> int:
        if self._free:
            slot = self._free.pop()
            self._ids[slot] = msg_id
            self._key[slot] = key
            self._exp[slot] = deadline
            self._att[slot] = 0
            self._last[slot] = 0.0
        else:
            slot = len(self._ids)
            self._ids.append(msg_id)
            self._key.append(key)
            self._exp.append(deadline)
            self._att.append(0)
            self._last.append(0.0)
            self._state.append(_FREE)
        self._slot_of[msg_id] = slot
        if msg_id > self._max_id:
            self._max_id = msg_id
        return slot

    def _enqueue(self, queue: _Queue, slot: int) -> None:
        self._state[slot] = _QUEUED
        queue.fifo.append(slot)
        queue.live += 1
        self._backlog[queue.provider] += 1

    def _wheel_add(self, slot: int, deadline: float) -> None:
        k = int(deadline // _WHEEL_S)
        bucket = self._wheel.get(k)
        if bucket is None:
            bucket = self._wheel[k] = array("I")
            heapq.heappush(self._wheel_keys, k)
        bucket.append(slot)

    def _end(self, slot: int, in_structure: bool) -> None:
        """Forget a message; the slot is reused once no FIFO/timer entry points at it."""
        del self._slot_of[self._ids[slot]]
        if in_structure:
            self._state[slot] = _ZOMBIE
        else:
            self._state[slot] = _FREE
            self._free.append(slot)

    def _release(self, slot: int) -> None:
        self._state[slot] = _FREE
        self._free.append(slot)

    # -- time -----------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        if now < self._now:
            raise StateError(f"time ran backwards: {now} < {self._now}")
        self._now = now
        timers = self._timers
        state = self._state
        while timers and timers[0][0] <= now:
            _, slot = heapq.heappop(timers)
            st = state[slot]
            if st == _DEFERRED:
                self._enqueue(self._queues[self._key[slot]], slot)
            elif st == _ZOMBIE:
                self._release(slot)
        keys = self._wheel_keys
        if keys and (keys[0] + 1) * _WHEEL_S <= now:
            exp = self._exp
            ids = self._ids
            outbox = self._outbox
            why: dict[tuple[float, int], tuple[str, ...]] = {}  # one reason per deadline
            slot_of = self._slot_of
            queues = self._queues
            qkey = self._key
            backlog = self._backlog
            run: ExpireBatch | None = None  # the run the next expiry may join
            run_key: tuple[float, int] = (math.nan, -1)
            while keys and (keys[0] + 1) * _WHEEL_S <= now:
                k = heapq.heappop(keys)
                for slot in self._wheel.pop(k):
                    st = state[slot]
                    if st in (_QUEUED, _DEFERRED) and exp[slot] <= now:
                        if st == _QUEUED:
                            queue = queues[qkey[slot]]
                            queue.live -= 1
                            backlog[queue.provider] -= 1
                        key = (exp[slot], st)
                        msg_id = ids[slot]
                        if run is None or key != run_key or outbox[-1] is not run:
                            reasons = why.get(key)
                            if reasons is None:
                                reasons = why[key] = (
                                    f"TTL reached at {key[0]:.0f} while {_STATE_NAMES[st]}",)
                            run = ExpireBatch(ids=array("q"), at=now, state=_STATE_NAMES[st],
                                              reasons=reasons)
                            run_key = key
                            outbox.append(run)
                        run.ids.append(msg_id)
                        # ``_end(slot, in_structure=True)`` inlined
                        del slot_of[msg_id]
                        state[slot] = _ZOMBIE
        watch = self._watch
        if watch:
            for index in sorted(watch) if len(watch) > 1 else list(watch):
                ctrl = watch[index]
                if ctrl.breaker.state != "closed" or ctrl.automation.state != "normal":
                    changes: list[Decision] = [*ctrl.breaker.advance(now),
                                               *ctrl.automation.advance(now)]
                    if changes:
                        self._outbox.extend(changes)
                        self._apply_factor(ctrl, now)
                if ctrl.breaker.state == "closed" and ctrl.automation.state == "normal":
                    del watch[index]

    def _apply_factor(self, ctrl: _Control, now: float) -> None:
        factor = min(ctrl.breaker.factor, ctrl.automation.factor) * self._share
        if factor != ctrl.factor:
            ctrl.factor = factor
            for path in ctrl.paths:
                path.bucket.scale(factor, now)

    def tick(self, now: float) -> list[Decision]:
        """Time-driven decisions up to ``now`` plus any ``due`` left in the outbox."""
        self._advance(now)
        box, self._outbox = self._outbox, []
        out: list[Decision] = []
        for dec in box:
            if isinstance(dec, ExpireBatch):
                out.extend(dec.expand())
            else:
                out.append(dec)
        return out

    def next_wakeup(self, *, expiry_slack_s: float = 0.0) -> float | None:
        """The earliest time something may change without new input (None: nothing).

        ``expiry_slack_s`` (>= 0) lets a driver that batches its wake-ups (a simulator) take
        expiries up to that much later than the expiry wheel's 16 s: only the expiry
        wake-up moves. Nothing is sent after its deadline either way (``due`` expires stale
        messages it meets), and any call at or after a deadline still expires the message.
        """
        cands = [self._hint]
        if self._timers:
            cands.append(self._timers[0][0])
        if self._wheel_keys:
            cands.append((self._wheel_keys[0] + 1) * _WHEEL_S + max(0.0, expiry_slack_s))
        for ctrl in self._watch.values():  # a closed, normal control has no next change
            for t in (ctrl.breaker.next_change(), ctrl.automation.next_change()):
                if t is not None:
                    cands.append(t)
        if self._outbox:
            cands.append(self._now)
        best = min(cands)
        return None if math.isinf(best) else best

    # -- due ------------------------------------------------------------------------------
    def due(self, now: float) -> list[Dispatch]:
        """Batches to send at ``now``. Expiries found on the way go to the outbox (``tick``)."""
        self._advance(now)
        self._hint = math.inf
        out: list[Dispatch] = []
        for provider, lanes in self._by_provider.items():
            if self._backlog[provider] <= 0:
                continue
            self._due_provider(provider, lanes, now, out)
        return out

    def _due_provider(self, provider: str, lanes: dict[Lane, list[_Queue]], now: float,
                      out: list[Dispatch]) -> None:
        paths = self._paths[provider]
        capped: set[str] = set()
        # only an overflow pool ever reads ``capped`` (see ``_reachable``)
        for pool_name, counter in self._warmups.items() if self._overflow else ():
            if all((counter.remaining(p.ip, provider, now) or 0) == 0 and
                   counter.remaining(p.ip, provider, now) is not None
                   for p in paths if p.pool == pool_name):
                capped.add(pool_name)
        splitter = self._splitters[provider]
        window_open: dict[int, bool] = {}  # per queue: its send window at ``now``
        reach = self._reach.get(provider)
        if reach is None:
            reach = self._reach[provider] = [self._reachable(path, lanes) for path in paths]
        flat = self._flat.get(provider)
        if flat is None:
            # per path, its reachable queues in one list, queues with a send window first
            # (a pass without budget must still judge every window: it may set the hint)
            flat = self._flat[provider] = [
                sorted((e for _, entries in r for e in entries),
                       key=lambda e: e[0].window is None) for r in reach]
        backlog = self._backlog
        for k, path in enumerate(paths):
            if backlog[provider] <= 0:
                return
            budget = path.bucket.available(now)
            warm_left = path.warmup.remaining(path.ip, provider, now) if path.warmup else None
            if warm_left is not None and warm_left < budget:
                budget = warm_left
            if budget <= 0:
                # nothing to send on this path: only the wake-up hint is at stake -- a
                # closed send window's opening, and the bucket's next token when some
                # queue could use it (the same hints the full pass below would set)
                want_token = path.control.factor > 0 and warm_left != 0
                found = False
                for q, over in flat[k]:
                    if q.window is None and (found or not want_token):
                        break
                    if self._carries(q, over, capped, window_open, now):
                        found = True
                if found and want_token:
                    self._hint = min(self._hint, now + path.bucket.time_until(1, now))
                continue
            eligible: dict[Lane, list[_Queue]] = {}
            for lane, entries in reach[k]:
                ok: list[_Queue] = []
                for q, over in entries:
                    if self._carries(q, over, capped, window_open, now):
                        ok.append(q)
                if ok:
                    eligible[lane] = ok
            if not eligible:
                continue
            used = 0
            blocked: set[int] = set()
            for _ in range(3):  # re-split what bucket-blocked lanes could not use
                left = budget - used
                demand = {lane: sum(q.live for q in qs if q.index not in blocked)
                          for lane, qs in eligible.items()}
                if left <= 0 or not any(demand.values()):
                    break
                if warm_left is not None and path.warmup is not None:
                    alloc = strict_order(left, demand, path.warmup.plan.lane_order)
                    why = f"warmup cap left {warm_left}, lanes in plan order"
                else:
                    alloc = splitter.split(left, demand)
                    why = "weighted lane split"
                got = 0
                for lane, n in alloc.items():
                    if n > 0:
                        got += self._take_lane(provider, lane, eligible[lane], n, path, now,
                                               blocked, out, why)
                used += got
                if got == 0:
                    break
            if used:
                path.bucket.take(used, now)
                if path.warmup is not None and warm_left is not None:
                    path.warmup.count(path.ip, provider, used)
                # this pass emptied the bucket with mail still waiting: wake when it refills
                # (not at the next arrival), unless the path is paused or its warmup cap is spent
                if (path.control.factor > 0 and (warm_left is None or warm_left > used)
                        and path.bucket.available(now) < 1
                        and any(q.live > 0 for qs in eligible.values() for q in qs)):
                    self._hint = min(self._hint, now + path.bucket.time_until(1, now))

    def _carries(self, q: _Queue, over: tuple[str, ...] | None, capped: set[str],
                 window_open: dict[int, bool], now: float) -> bool:
        """May a path that reaches ``q`` (``over``: as the overflow of those warming pools,
        None: on its route) carry it now: mail waiting, the overflow's pools capped, the
        send window open (judged once per queue per ``due`` call in ``window_open``; a
        closed one sets the wake-up hint to its opening)."""
        if q.live <= 0:
            return False
        if over is not None and (not capped or not any(p in capped for p in over)):
            return False
        if q.window is None:
            return True
        is_open = window_open.get(q.index)
        if is_open is None:
            is_open = window_open[q.index] = in_window(now, q.offset, q.window)
            if not is_open:
                self._hint = min(self._hint, next_open(now, q.offset, q.window))
        return is_open

    def _reachable(self, path: _Path, lanes: dict[Lane, list[_Queue]]
                   ) -> list[tuple[Lane, list[tuple[_Queue, tuple[str, ...] | None]]]]:
        """Per lane, the queues ``path`` may ever carry (the static part of ``_may_use``):
        on the queue's route (None) or as the overflow of the listed warming pools."""
        pools = self.params.pools
        out: list[tuple[Lane, list[tuple[_Queue, tuple[str, ...] | None]]]] = []
        for lane, queues in lanes.items():
            entries: list[tuple[_Queue, tuple[str, ...] | None]] = []
            for q in queues:
                ips = q.routes.get(path.pool)
                if ips is None:
                    over = tuple(p for p in q.routes if pools[p].overflow_to == path.pool)
                    if over:
                        entries.append((q, over))
                elif path.ip in ips:
                    entries.append((q, None))
            out.append((lane, entries))
        return out

    def _take_lane(self, provider: str, lane: Lane, queues: list[_Queue], n: int, path: _Path,
                   now: float, blocked: set[int], out: list[Dispatch], why: str) -> int:
        """Take up to ``n`` messages from ``queues`` (one lane), fair between queues."""
        start = self._rotate.get((provider, lane), 0) % len(queues)
        order = queues[start:] + queues[:start]
        self._rotate[(provider, lane)] = start + 1
        taken = 0
        active = [q for q in order if q.index not in blocked]
        while taken < n and active:
            share = max(1, (n - taken) // len(active))
            nxt: list[_Queue] = []
            for q in active:
                want = min(share, n - taken, q.live)
                if want <= 0:
                    continue
                limit = self._limit(q, want, now)
                if limit <= 0:
                    blocked.add(q.index)
                    continue
                ids = self._pop(q, limit, now)
                if ids:
                    taken += len(ids)
                    self._charge(q, len(ids), now)
                    factor = path.control.factor
                    memo = path.memo
                    if memo is None or memo[0] != factor:
                        memo = path.memo = (
                            factor, connection_plan(path.control.shaping, factor),
                            f"path {path.pool}/{path.ip} factor {factor:g}")
                    plan = memo[1]
                    out.append(Dispatch(
                        lane=lane, tenant=q.tenant, sending_domain=q.domain, provider=provider,
                        pool=path.pool, source_ip=path.ip, ids=tuple(ids),
                        messages_per_connection=plan.messages_per_connection,
                        max_connections=plan.max_connections, reasons=(why, memo[2]),
                    ))
                if q.live > 0 and limit >= want:
                    nxt.append(q)
                elif limit < want:
                    blocked.add(q.index)
            active = nxt
        return taken

    def _limit(self, q: _Queue, want: int, now: float) -> int:
        spec = self.params.domain_buckets.get(q.domain)
        if spec is not None:
            b = self._domain_buckets.get(q.domain)
            if b is None:
                b = self._domain_buckets[q.domain] = TokenBucket.from_spec(spec, now)
            want = min(want, b.available(now))
            if want <= 0:
                self._hint = min(self._hint, now + b.time_until(1, now))
        tspec = self.params.tenant_buckets.get(q.tenant)
        if tspec is not None and want > 0:
            t = self._tenant_buckets.get(q.tenant)
            if t is None:
                t = self._tenant_buckets[q.tenant] = TokenBucket.from_spec(tspec, now)
            want = min(want, t.available(now))
            if want <= 0:
                self._hint = min(self._hint, now + t.time_until(1, now))
        return want

    def _charge(self, q: _Queue, n: int, now: float) -> None:
        if q.domain in self._domain_buckets:
            self._domain_buckets[q.domain].take(n, now)
        if q.tenant in self._tenant_buckets:
            self._tenant_buckets[q.tenant].take(n, now)

    def _pop(self, q: _Queue, n: int, now: float) -> list[int]:
        """Pop up to ``n`` live slots from ``q``; marks them in flight; expires stale ones."""
        fifo = q.fifo
        state = self._state
        exp = self._exp
        ids = self._ids
        out: list[int] = []
        head = q.head
        end = len(fifo)
        while len(out) < n and head < end:
            slot = fifo[head]
            head += 1
            st = state[slot]
            if st == _QUEUED:
                q.live -= 1
                if exp[slot] <= now:
                    self._outbox.append(Expire(id=ids[slot], at=now, state="queued",
                                               reasons=(f"TTL reached at {exp[slot]:.0f} "
                                                        "while queued",)))
                    self._end(slot, in_structure=False)
                    continue
                state[slot] = _INFLIGHT
                out.append(ids[slot])
            elif st == _ZOMBIE:
                self._release(slot)
        self._backlog[q.provider] -= len(out)
        if head > 4096 and head * 2 > end:
            del fifo[:head]
            head = 0
        q.head = head
        return out

    # -- record -----------------------------------------------------------------------------
    def record(self, result: Result, now: float) -> list[Decision]:
        """Decide what an attempt's outcome means. Raises ``StateError`` if the id is not
        in flight (unknown, or recorded twice)."""
        self._advance(now)
        slot = self._slot_of.get(result.id)
        if slot is None or self._state[slot] != _INFLIGHT:
            raise StateError(f"message {result.id} is not in flight")
        ctrl = self._controls.get((result.pool, result.provider))
        out: list[Decision] = []
        attempt = self._att[slot] + 1
        self._att[slot] = min(attempt, 65535)
        if result.code is None and result.data_completed:
            if ctrl is not None:
                out.extend(self._observe(ctrl, now, attempts=1))
            out.append(Ambiguous(id=result.id, at=now,
                                 reasons=("DATA completed without a reply: possible duplicate,"
                                          " not retried",)))
            self._end(slot, in_structure=False)
            return out
        if result.code is not None and 200 <= result.code < 300:
            if ctrl is not None:
                out.extend(self._observe(ctrl, now, attempts=1))
            out.append(Delivered(id=result.id, at=now, reasons=(f"{result.code} accepted",)))
            self._end(slot, in_structure=False)
            return out
        verdict = result.verdict
        if verdict is None:
            if self.classify is not None and result.code is not None:
                verdict = self.classify(result.provider, result.code, result.text)
            else:
                verdict = basic_verdict(result.provider, result.code, result.text)
        chain = (*verdict.reasons, f"rule {verdict.rule}: {verdict.category} -> {verdict.action}")
        rule = self._rules.get((result.provider, verdict.rule))
        if ctrl is not None:
            out.extend(self._observe(
                ctrl, now, attempts=1, deferrals=1 if verdict.temporary else 0,
                bounces=0 if verdict.temporary or verdict.action == "pause_pool" else 1))
            if rule is not None or verdict.action == "pause_pool":
                if rule is None:
                    rule = ReplyRule(id=verdict.rule, provider=result.provider,
                                     category=verdict.category, action=verdict.action,
                                     scope=verdict.scope)
                changes = ctrl.automation.match(rule, now,
                                                pause_pool=verdict.action == "pause_pool")
                self._watch[ctrl.index] = ctrl
                if changes:
                    out.extend(changes)
                    self._apply_factor(ctrl, now)
        if not verdict.temporary and verdict.action != "pause_pool":
            if verdict.action == "suppress_recipient":
                out.append(Suppress(id=result.id, at=now, reasons=chain))
            else:
                out.append(DeadLetter(id=result.id, at=now, reasons=chain))
            self._end(slot, in_structure=False)
            return out
        out.append(self._retry(slot, attempt, verdict, rule, ctrl, now, chain))
        return out

    def record_batch(self, ids: Sequence[SupportsIndex],
                     codes: Sequence[SupportsIndex | None],
                     texts: Sequence[str], *, pool: str, source_ip: str, provider: str,
                     now: float) -> BatchRecord:
        """``record`` the outcomes of one dispatch's messages (``ids[i]`` got ``codes[i]`` /
        ``texts[i]``; a code None is "no reply", never after DATA) in order, with the same
        decisions, state and rng draws as calling ``record`` for each in turn. Each distinct
        (code, text) is classified once; a run of accepted messages is booked together
        (the breaker is judged only where its verdict can change). Raises ``StateError``
        before changing anything if an id is not in flight or appears twice."""
        self._advance(now)
        id_list = [int(i) for i in ids]
        code_list = [None if c is None else int(c) for c in codes]
        n = len(id_list)
        if len(code_list) != n or len(texts) != n:
            raise InputError("record_batch: ids, codes and texts differ in length")
        slot_of = self._slot_of
        state = self._state
        for msg_id in id_list:
            slot = slot_of.get(msg_id)
            if slot is None or state[slot] != _INFLIGHT:
                raise StateError(f"message {msg_id} is not in flight")
        if len(set(id_list)) != n:
            raise StateError("record_batch: an id appears twice")
        out = BatchRecord(at=now)
        ctrl = self._controls.get((pool, provider))
        verdicts: dict[tuple[int | None, str], Verdict] = {}
        i = 0
        while i < n:
            code = code_list[i]
            if code is not None and 200 <= code < 300:
                j = i + 1
                while j < n and (c := code_list[j]) is not None and 200 <= c < 300:
                    j += 1
                # a run at the start follows this call's own ``_advance(now)`` with no
                # change in between: advancing again at the same instant is a no-op
                self._accept_run(id_list[i:j], code_list[i:j], ctrl, now, out, i > 0)
                i = j
                continue
            text = texts[i]
            verdict = verdicts.get((code, text))
            if verdict is None:
                if self.classify is not None and code is not None:
                    verdict = self.classify(provider, code, text)
                else:
                    verdict = basic_verdict(provider, code, text)
                verdicts[(code, text)] = verdict
            res = Result(id=id_list[i], pool=pool, source_ip=source_ip, provider=provider,
                         code=code, text=text, verdict=verdict)
            for dec in self.record(res, now):
                out.marks.append(len(out.delivered))
                out.decisions.append(dec)
            i += 1
        return out

    def _accept_run(self, run: list[int], run_codes: list[int | None],
                    ctrl: _Control | None, now: float, out: BatchRecord,
                    advance: bool = True) -> None:
        """Book consecutive accepted messages as ``record`` would, one at a time."""
        pos = 0
        k = len(run)
        while pos < k:
            if advance or pos:
                self._advance(now)
            changes: list[Decision] = []
            if ctrl is None:
                take = k - pos
            else:
                take, changes = self._observe_accepts(ctrl, now, k - pos)
            end = pos + take
            if changes:
                # the transition came with the run's last message: decisions before it
                self._book_delivered(run[pos:end - 1], run_codes[pos:end - 1], out)
                for dec in changes:
                    out.marks.append(len(out.delivered))
                    out.decisions.append(dec)
                self._book_delivered(run[end - 1:end], run_codes[end - 1:end], out)
            else:
                self._book_delivered(run[pos:end], run_codes[pos:end], out)
            pos = end

    def _observe_accepts(self, ctrl: _Control, now: float, k: int) -> tuple[int, list[Decision]]:
        """Count up to ``k`` accepted attempts on ``ctrl``'s breaker, one verdict at a time
        in effect: returns (how many were counted, the transition the last one caused).
        With only attempts added at one ``now`` every rate falls, so once a judged attempt
        changes nothing neither does any later one; attempts below ``min_volume`` are never
        judged."""
        br = ctrl.breaker
        if br.state == "open":
            return k, self._observe(ctrl, now, attempts=k)
        sent = br.totals(now)[0]
        silent = max(0, math.ceil(br.spec.min_volume - sent) - 1)
        if silent >= k:
            return k, self._observe(ctrl, now, attempts=k)
        if silent:
            changes = self._observe(ctrl, now, attempts=silent)
            if changes:  # cannot happen below min_volume; stay exact if it ever does
                return silent, changes
        changes = self._observe(ctrl, now, attempts=1)
        if changes or silent + 1 == k:
            return silent + 1, changes
        rest = k - silent - 1
        return k, self._observe(ctrl, now, attempts=rest)

    def _book_delivered(self, run: list[int], run_codes: list[int | None],
                        out: BatchRecord) -> None:
        slot_of = self._slot_of
        att = self._att
        state = self._state
        free = self._free
        for msg_id in run:
            slot = slot_of.pop(msg_id)
            a = att[slot] + 1
            att[slot] = a if a < 65535 else 65535
            state[slot] = _FREE
            free.append(slot)
        out.delivered.extend(run)
        out.delivered_codes.extend(c or 0 for c in run_codes)

    def _retry(self, slot: int, attempt: int, verdict: Verdict, rule: ReplyRule | None,
               ctrl: _Control | None, now: float, chain: tuple[str, ...]) -> Decision:
        queue = self._queues[self._key[slot]]
        spec = self.params.lanes[queue.lane].retry
        override = verdict.retry_after_s
        if rule is not None and rule.retry_after_s is not None:
            override = max(override or 0, rule.retry_after_s)
        hold: float | None = None
        if ctrl is not None:
            hold = ctrl.automation.resume_at(now, self.rng)
            if ctrl.breaker.state == "open":
                spread = self.params.automation.resume_spread_s * self.rng.random()
                hold = max(hold or 0.0, ctrl.breaker.open_until + spread)
        plan = plan_retry(spec, attempt=attempt, previous=float(self._last[slot]), now=now,
                          deadline=self._exp[slot], rng=self.rng,
                          override_s=None if override is None else float(override),
                          not_before=hold)
        msg_id = self._ids[slot]
        if plan.at is None:
            self._end(slot, in_structure=False)
            if attempt >= spec.max_attempts:
                return DeadLetter(id=msg_id, at=now, reasons=(*chain, *plan.reasons))
            return Expire(id=msg_id, at=now, state="deferred", reasons=(*chain, *plan.reasons))
        self._last[slot] = plan.delay
        self._state[slot] = _DEFERRED
        heapq.heappush(self._timers, (plan.at, slot))
        return Retry(id=msg_id, at=plan.at, attempt=attempt, reasons=(*chain, *plan.reasons))

    def _observe(self, ctrl: _Control, now: float, **counts: int) -> list[Decision]:
        changes: list[Decision] = list(ctrl.breaker.observe(now, **counts))
        if changes:
            self._watch[ctrl.index] = ctrl
        if changes:
            self._apply_factor(ctrl, now)
        return changes

    # -- feedback ---------------------------------------------------------------------------
    def feedback(self, signal: Signal, now: float) -> list[Decision]:
        """Count a complaint / async bounce against its pool x provider, or open its breaker
        on an incident. Engagement is accepted and changes nothing yet."""
        self._advance(now)
        self._ensure_paths(signal.provider)
        ctrl = self._controls.get((signal.pool, signal.provider))
        if ctrl is None:
            raise InputError(f"unknown pool {signal.pool!r}")
        out: list[Decision] = []
        if signal.kind == "complaint":
            out.extend(self._observe(ctrl, now, complaints=signal.count))
        elif signal.kind == "bounce":
            out.extend(self._observe(ctrl, now, bounces=signal.count))
        elif signal.kind == "incident":
            out.extend(ctrl.breaker.incident(now, signal.reason or "incident signal"))
            self._watch[ctrl.index] = ctrl
            self._apply_factor(ctrl, now)
        return out


def tick_batched(scheduler: Scheduler, now: float) -> list[Decision | ExpireBatch]:
    """``scheduler.tick(now)`` for a simulator: the same decisions in the same order, except
    that each run of expiries sharing deadline, state and reason comes as one
    ``ExpireBatch`` (a million expiries become a few thousand objects); replacing each batch
    by ``batch.expand()`` gives exactly the list ``tick(now)`` would have returned.

    A function of this module, not a method: ``Scheduler``'s public verbs stay exactly the
    set a decision log records (``sim.parity.Recorder`` refuses any other attribute, so a
    recorded scheduler passed here raises instead of changing state unlogged)."""
    scheduler._advance(now)
    out, scheduler._outbox = scheduler._outbox, []
    return out
