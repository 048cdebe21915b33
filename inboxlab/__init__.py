"""inboxlab: the lab around the sending engine (CLI, warehouse, metrics, reports, gates)."""

__version__ = "0.1.0"
