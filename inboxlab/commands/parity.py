"""``inboxlab parity SCENARIO``: run one scenario in the sim and live against the sandbox,
print the comparison (sim/parity.py owns the runs; this module only parses and prints)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("parity")
    def parity(
        scenario: Path = typer.Argument(..., help="a parity-*.toml scenario"),  # noqa: B008
        seed: int | None = typer.Option(None, "--seed", help="override the scenario's seed"),
        time_scale: float = typer.Option(200.0, "--time-scale",
                                         help="model seconds per real second (live run)"),
        out: Path = typer.Option(Path("parity-out"), "--out",  # noqa: B008
                                 help="directory for the spool and sandbox files"),
        strict: bool = typer.Option(False, "--strict",
                                    help="exit 1 when any check is outside its tolerance"),
        seeds: int = typer.Option(0, "--seeds",
                                  help="also simulate N other seeds and judge the live run "
                                       "against that ensemble (within 3 sd; 0: single run)"),
    ) -> None:
        """Run SCENARIO two ways (SimPy, live runner vs sandbox) and compare them."""
        from dataclasses import replace

        from engine.errors import InputError
        from sim.parity import format_report, load_scenario, run_both

        if time_scale <= 0:
            raise InputError(f"--time-scale must be > 0, got {time_scale}")
        if not 0 <= seeds <= 1000:
            raise InputError(f"--seeds must be between 0 and 1000, got {seeds}")
        sc = load_scenario(scenario)
        if seed is not None:
            sc = replace(sc, seed=seed)
        rep = run_both(sc, time_scale=time_scale, home=out, seeds=seeds)
        typer.echo(format_report(sc.name, rep))
        if strict and not rep["ok"]:
            raise typer.Exit(1)
