"""``inboxlab sim replay`` and ``inboxlab sim calibrate``: the lab loop on recorded traffic.

Owns only the command-line surface: resolving ``--from`` (a run folder with events.parquet,
or one SQL query over the warehouse views) into an event frame, and printing. The work is
``sim.replay`` and ``sim.calibrate``. ``register_sim(sim_app)`` adds the two commands to the
``sim`` sub-typer; ``register(app)`` does nothing (the ``sim`` module calls register_sim).
Bad input raises ``InputError`` / ``ConfigError`` / ``QueryError``; the CLI edge prints one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import polars as pl


def load_source(source: str, home: Path | None) -> tuple[pl.DataFrame, str]:
    """(events, description) from a run folder or a SQL query over the warehouse."""
    from engine.errors import InputError

    path = Path(source)
    if path.is_dir():
        from engine.eventio import read_events

        file = path / "events.parquet"
        if not file.is_file():
            raise InputError(f"--from: {path} has no events.parquet")
        try:
            return read_events(file), str(path)
        except Exception as exc:  # a damaged or foreign Parquet file
            raise InputError(f"--from: cannot read {file}: {exc}") from None
    if not any(w in source.lower() for w in ("select", "from")):
        raise InputError(f"--from: {source!r} is neither a run folder nor a SQL query")
    from inboxlab.warehouse import query

    return query(home, source), f"query: {source}"


def replay_cmd(
    source: str = typer.Option(..., "--from", help="run folder (events.parquet) or SQL query"),
    policy: Path = typer.Option(..., "--policy", help="policy file to replay under"),  # noqa: B008
    out: Path = typer.Option(..., "--out", help="output folder"),  # noqa: B008
    home: Path | None = typer.Option(None, "--home", help="warehouse home for a query"),  # noqa: B008
    seed: int = typer.Option(1, "--seed", help="random seed"),
    lab: Path | None = typer.Option(None, "--lab", help="lab config (default fixtures/lab.toml)"),  # noqa: B008
    step: float = typer.Option(60.0, "--step", help="arrival slice in seconds"),
    tail: float = typer.Option(21600.0, "--tail", help="seconds simulated after the last arrival"),
) -> None:
    """Re-send recorded arrivals under another policy; write OUT/events.parquet + summary.json."""
    from engine.errors import InputError
    from sim.replay import replay

    if lab is not None and not lab.is_file():
        raise InputError(f"--lab: file not found: {lab}")
    frame, desc = load_source(source, home)
    s = replay(frame, policy, out, seed=seed, lab=lab, step_s=step, tail_s=tail, source=desc)
    typer.echo(f"replay of {desc} under {s['policy_version']}: {s['messages']} messages, "
               f"{s['delivered']} delivered, {s['deferred']} deferrals, {s['bounced']} bounced"
               f" -> {out}")


def calibrate_cmd(
    source: str = typer.Option(..., "--from", help="run folder (events.parquet) or SQL query"),
    provider: str = typer.Option(..., "--provider", help="provider model to fit"),
    out: Path = typer.Option(..., "--out", help="calibrated model file to write"),  # noqa: B008
    home: Path | None = typer.Option(None, "--home", help="warehouse home for a query"),  # noqa: B008
    holdout: str | None = typer.Option(None, "--holdout", help="day or ip"),
    model: Path | None = typer.Option(None, "--model", help="start model file (default: "  # noqa: B008
                                                            "fixtures/models/PROVIDER.toml)"),
    truth: Path | None = typer.Option(None, "--truth", help="model file with the true values"),  # noqa: B008
    seed: int = typer.Option(7, "--seed", help="seed of the common random numbers"),
    maxiter: int = typer.Option(8, "--maxiter", min=1, help="generations per block"),
) -> None:
    """Fit PROVIDER's model parameters to recorded outcomes; write a calibrated model file."""
    from engine.errors import InputError
    from sim.calib_data import recording_from_events
    from sim.calibrate import calibrate_holdout, render, values_of, write_model
    from sim.providers import load_params

    if holdout not in (None, "day", "ip"):
        raise InputError(f"--holdout must be day or ip, got {holdout!r}")
    start_model: str | Path = model if model is not None else provider
    if model is not None and not model.is_file():
        raise InputError(f"--model: file not found: {model}")
    start = load_params(start_model)
    frame, desc = load_source(source, home)
    rec = recording_from_events(frame, provider, start)
    cal = calibrate_holdout(rec, start, holdout, seed=seed, maxiter=maxiter)
    true_values = values_of(load_params(truth), cal.names) if truth is not None else None
    write_model(cal, out, start_model, desc)
    typer.echo(render(cal, true_values))
    typer.echo(f"-> {out}")


def register_sim(sim_app: typer.Typer) -> None:
    """Add ``replay`` and ``calibrate`` to the ``sim`` sub-typer."""
    sim_app.command("replay")(replay_cmd)
    sim_app.command("calibrate")(calibrate_cmd)


def register(app: typer.Typer) -> None:
    """Nothing: ``inboxlab.commands.sim`` calls ``register_sim`` on its sub-typer."""
