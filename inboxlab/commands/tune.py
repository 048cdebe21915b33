"""``inboxlab tune``: search policy parameters in simulation and write the winning policy.

Owns only the command-line surface; the work is ``inboxlab.tuning``. Bad files raise
``ConfigError``, bad arguments ``InputError``; the CLI edge prints one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer


def tune_cmd(
    scenarios: list[str] = typer.Argument(..., help="scenario names or .toml paths"),  # noqa: B008
    space: Path = typer.Option(..., "--space", help="search space TOML (fixtures/tuning)"),  # noqa: B008
    base: Path = typer.Option(..., "--base", help="the policy file to start from"),  # noqa: B008
    out: Path = typer.Option(..., "--out", help="output folder"),  # noqa: B008
    objective: str = typer.Option("throughput", "--objective", help="metric to optimise"),
    constraints: str = typer.Option("", "--constraints",
                                    help="e.g. 'complaint_rate<0.0008,tx_p95_accept_s<30,"
                                         "automation_suspensions<=baseline'"),
    budget: int = typer.Option(12, "--budget", help="candidates to simulate"),
    seed: int = typer.Option(1, "--seed", help="search seed and first simulation seed"),
    seeds: int = typer.Option(1, "--seeds", min=1, help="simulation seeds per scenario"),
    scale: float | None = typer.Option(None, "--scale", help="volume multiplier"),
    workers: int = typer.Option(1, "--workers", min=1, help="parallel processes"),
    override: list[str] = typer.Option([], "--set", help="scenario key=value, e.g. "  # noqa: B008
                                                         "duration=2d"),
    actor: str | None = typer.Option(None, "--actor", help="who runs this (default $USER)"),
) -> None:
    """Tune a policy on common random numbers; write <base>-tuned-<n>.toml and evaluation.json."""
    from engine.errors import InputError
    from inboxlab.tuning import load_space, parse_constraints, tune
    from inboxlab.tuning.objective import check_objective
    from sim.sweep import parse_grid

    if scale is not None and scale <= 0:
        raise InputError(f"--scale must be > 0, got {scale}")
    sets = {k: v[0] for k, v in parse_grid(override).items()}
    record = tune(scenarios, load_space(space), base, out, objective=check_objective(objective),
                  constraints=parse_constraints(constraints), budget=budget,
                  seeds=list(range(seed, seed + seeds)), seed=seed, scale=scale,
                  workers=workers, overrides=sets, actor=actor or os.environ.get("USER", ""),
                  log=typer.echo)
    win = record["winner"]
    if win is None:
        typer.echo(f"no feasible candidate beat {record['base']['version']} on {objective}; "
                   f"evaluation -> {out / 'evaluation.json'}")
        raise typer.Exit(2)
    comp = win["comparison"]["objective"]
    typer.echo(f"winner {win['version']}: {objective} {record['base']['metrics'][objective]} -> "
               f"{win['metrics'][objective]} (paired diff {comp['mean_diff']:.3f} {comp['unit']},"
               f" 95% CI {comp['ci95']}) -> {win['file']}")


def register(app: typer.Typer) -> None:
    """Add ``tune``."""
    app.command("tune")(tune_cmd)
