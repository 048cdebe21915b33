"""``inboxlab sim``: run, sweep and compare simulated scenarios.

Owns only the command-line surface (arguments, progress bar, printing); the work is
``sim.run``, ``sim.sweep`` and ``sim.compare``. Bad scenario, lab or policy files raise
``ConfigError`` and bad arguments ``InputError``; the CLI edge prints one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

sim_app = typer.Typer(help="Simulate scenarios with the real policy core.", no_args_is_help=True)


@sim_app.command("run")
def run_cmd(
    scenario: str = typer.Argument(..., help="a name in fixtures/scenarios or a .toml path"),
    seed: int = typer.Option(1, "--seed", help="random seed (same seed, same events)"),
    out: Path = typer.Option(..., "--out", help="output folder"),  # noqa: B008
    policy: Path | None = typer.Option(None, "--policy", help="policy file to run instead"),  # noqa: B008
    scale: float | None = typer.Option(None, "--scale", help="volume multiplier"),
) -> None:
    """Run SCENARIO; write OUT/events.parquet and OUT/summary.json."""
    from engine.errors import InputError
    from sim.run import run_scenario

    if scale is not None and scale <= 0:
        raise InputError(f"--scale must be > 0, got {scale}")
    if policy is not None and not policy.is_file():
        raise InputError(f"--policy: file not found: {policy}")
    if sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"sim {scenario}", total=1.0)
            summary = run_scenario(scenario, seed, out, policy=policy, scale=scale,
                                   progress=lambda f: bar.update(task, completed=f))
    else:
        summary = run_scenario(scenario, seed, out, policy=policy, scale=scale)
    typer.echo(f"{summary['scenario']} seed {seed}: {summary['messages']} messages, "
               f"{summary['delivered']} delivered, {summary['deferred']} deferrals, "
               f"{summary['bounced']} bounced, complaint rate {summary['complaint_rate']:.4%}"
               f" -> {out}")


@sim_app.command("sweep")
def sweep_cmd(
    scenario: str = typer.Argument(..., help="a name in fixtures/scenarios or a .toml path"),
    grid: list[str] = typer.Option(..., "--grid", help="key=v1,v2 (seed, scale, policy or a "  # noqa: B008
                                                       "dotted scenario key)"),
    out: Path = typer.Option(..., "--out", help="output folder"),  # noqa: B008
    workers: int = typer.Option(2, "--workers", min=1, help="parallel processes"),
    seed: int = typer.Option(1, "--seed", help="seed of every point unless the grid has seed"),
    scale: float | None = typer.Option(None, "--scale", help="volume multiplier"),
) -> None:
    """Run a grid of points in parallel on common random numbers; one row per point."""
    from sim.sweep import parse_grid, sweep

    points = sweep(scenario, parse_grid(grid), out, workers=workers, seed=seed, scale=scale)
    typer.echo(f"{len(points)} points -> {out / 'points.parquet'} and {out / 'points.csv'}")


@sim_app.command("compare")
def compare_cmd(
    dir_a: Path = typer.Argument(..., help="a run folder (events.parquet)"),  # noqa: B008
    dir_b: Path = typer.Argument(..., help="another run folder of the same scenario"),  # noqa: B008
) -> None:
    """Paired comparison of two runs, hour by hour, with 95 % confidence intervals."""
    from sim.compare import compare, render

    typer.echo(render(compare(dir_a, dir_b)))


def register(app: typer.Typer) -> None:
    """Add the ``sim`` sub-typer (with ``replay`` and ``calibrate`` from ``sim_lab``)."""
    from inboxlab.commands.sim_lab import register_sim

    if not any(c.name == "calibrate" for c in sim_app.registered_commands):
        register_sim(sim_app)
    app.add_typer(sim_app, name="sim")
