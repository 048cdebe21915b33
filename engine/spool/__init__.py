"""The durable spool of the live engine: SQLite store, recipient state table, recovery.

``Spool`` (``engine.spool.store``) owns the database; ``engine.spool.states`` the table of
legal transitions. Nothing here talks SMTP/HTTP or decides policy.
"""

from engine.spool.states import STATES, TERMINAL, TRANSITIONS, check_transition
from engine.spool.store import Accepted, IdempotencyConflict, Job, Pending, Spool

__all__ = ["STATES", "TERMINAL", "TRANSITIONS", "Accepted", "IdempotencyConflict", "Job",
           "Pending", "Spool", "check_transition"]
