"""The pure policy core: every sending decision, no IO, no clock, no global randomness.

Re-exports the public names of the core's modules so drivers write
``from engine.policy import Scheduler, Result, Signal``. The classifier
(``engine.policy.classify``) and the vocabulary (``engine.policy.types``) are imported
from their own modules. Nothing here may import asyncio, simpy, sqlite3, duckdb, time or
random (``tests/unit/test_purity.py`` checks every module).
"""

from engine.policy.automation import Automation, AutomationChange
from engine.policy.breaker import TRANSITIONS, Breaker, BreakerChange
from engine.policy.bucket import ConnectionPlan, TokenBucket, connection_plan
from engine.policy.lanes import LaneSplitter, guaranteed_share, strict_order
from engine.policy.retry import RandomSource, RetryPlan, plan_retry, retry_delays, retry_times
from engine.policy.scheduler import (
    TERMINAL_TYPES,
    Ambiguous,
    DeadLetter,
    Decision,
    Delivered,
    Dispatch,
    Expire,
    Result,
    Retry,
    Scheduler,
    Signal,
    Suppress,
    basic_verdict,
)
from engine.policy.warmup import Outlook, WarmupCounter, day_cap, outlook, projected_throughput
from engine.policy.windows import allowed_routes, in_window, next_open

__all__ = [
    "TERMINAL_TYPES",
    "TRANSITIONS",
    "Ambiguous",
    "Automation",
    "AutomationChange",
    "Breaker",
    "BreakerChange",
    "ConnectionPlan",
    "DeadLetter",
    "Decision",
    "Delivered",
    "Dispatch",
    "Expire",
    "LaneSplitter",
    "Outlook",
    "RandomSource",
    "Result",
    "Retry",
    "RetryPlan",
    "Scheduler",
    "Signal",
    "Suppress",
    "TokenBucket",
    "WarmupCounter",
    "allowed_routes",
    "basic_verdict",
    "connection_plan",
    "day_cap",
    "guaranteed_share",
    "in_window",
    "next_open",
    "outlook",
    "plan_retry",
    "projected_throughput",
    "retry_delays",
    "retry_times",
    "strict_order",
]
