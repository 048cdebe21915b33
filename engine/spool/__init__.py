"""The durable spool of the live engine: SQLite store, recipient state table, recovery.

``Spool`` (``engine.spool.store``) owns the database; ``engine.spool.states`` the table of
legal transitions; ``PgSpool`` (``engine.spool.pg``, imported on demand: it needs psycopg)
the same contract on PostgreSQL for several engine nodes. ``open_spool`` picks one by target.
Nothing here talks SMTP/HTTP or decides policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.spool.states import STATES, TERMINAL, TRANSITIONS, check_transition
from engine.spool.store import Accepted, IdempotencyConflict, Job, Pending, Spool

if TYPE_CHECKING:
    from engine.spool.pg import PgSpool

__all__ = ["STATES", "TERMINAL", "TRANSITIONS", "Accepted", "IdempotencyConflict", "Job",
           "Pending", "Spool", "check_transition", "is_pg_target", "open_spool"]


def is_pg_target(target: str | Path) -> bool:
    """True when ``target`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_spool(target: str | Path, **kw: Any) -> Spool | PgSpool:
    """A ``PgSpool`` for a ``postgresql://...`` URL (``?schema=NAME`` optional; keyword
    options such as ``node``, ``lease``, ``max_held`` pass through), else a SQLite ``Spool``
    at the path ``target``. Options of the other backend are rejected by its constructor
    (``TypeError``); an unreachable server raises ``ConfigError``."""
    if is_pg_target(target):
        from engine.spool.pg import PgSpool

        return PgSpool(str(target), **kw)
    return Spool(target, **kw)
