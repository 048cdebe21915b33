"""Policy tuning in simulation: search spaces, objectives/constraints, the seeded search.

Public surface: ``load_space``, ``parse_constraints``, ``tune``.
"""

from __future__ import annotations

from inboxlab.tuning.objective import parse_constraints
from inboxlab.tuning.search import tune
from inboxlab.tuning.space import load_space

__all__ = ["load_space", "parse_constraints", "tune"]
