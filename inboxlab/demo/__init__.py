"""``inboxlab demo``: the whole lab with one command (sandbox, sim, engine, warehouse, report).

The package owns orchestration only: ``lab.run_demo`` drives the other parts through their
command lines and public functions, ``procs`` keeps the child processes it started (and
stops them on any exit), ``traffic`` plans and POSTs the demo messages, ``summary`` reads
the warehouse for the closing table. It changes no engine, sim or warehouse code.
"""

from __future__ import annotations

from inboxlab.demo.lab import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
