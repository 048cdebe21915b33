"""``inboxlab promote``: admit a tuned policy to a pool and roll it out in stages.

``promote admit POLICY --pool P --evaluation FILE`` (gates, then 1 %); ``promote status``,
``advance``, ``rollback``, ``check`` (judge the canary from warehouse data and advance or
roll back) and ``watch`` (load the engines' events and check, on a timer, until the pool is
promoted or rolled back). Owns only the command-line surface; the work is ``inboxlab.promotion``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

promote_app = typer.Typer(help="Staged policy rollout with gates and automatic rollback.",
                          no_args_is_help=True)

HOME = typer.Option(None, "--home", help="home folder (default $INBOXLAB_HOME or ./var)")
POOL = typer.Option(..., "--pool", help="the IP pool")
ACTOR = typer.Option(None, "--actor", help="who (default $USER)")


def _home(home: Path | None) -> Path:
    from inboxlab.warehouse import home_dir

    return home_dir(home)


def _say(entry: dict[str, object]) -> None:
    typer.echo(f"{entry['pool']}: {entry['action']} -> {entry['state']} "
               f"({entry['policy_version']}) by {entry['actor']}: {entry['reason']}")


@promote_app.command("admit")
def admit_cmd(
    policy: Path = typer.Argument(..., help="the tuned policy file"),  # noqa: B008
    pool: str = POOL, home: Path | None = HOME, actor: str | None = ACTOR,
    evaluation: Path | None = typer.Option(None, "--evaluation",  # noqa: B008
                                           help="evaluation.json (default: next to POLICY)"),
    current: Path | None = typer.Option(None, "--current",  # noqa: B008
                                        help="the pool's current policy (first promotion)"),
    margin: float = typer.Option(0.01, "--margin", help="non-inferiority margin (fraction)"),
    allow_noninferior: bool = typer.Option(False, "--allow-noninferior",
                                           help="admit when not worse (default: better)"),
) -> None:
    """Admit POLICY when its evaluation passes the gates; start it at 1 % of the pool."""
    from engine.errors import InputError
    from inboxlab.promotion import admit

    if not policy.is_file():
        raise InputError(f"policy file not found: {policy}")
    ev_path = evaluation or policy.parent / "evaluation.json"
    try:
        ev = json.loads(ev_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{ev_path}: not a readable evaluation: {exc}") from None
    _say(admit(_home(home), pool, policy, ev, current=current, actor=actor, margin=margin,
               allow_noninferior=allow_noninferior))


@promote_app.command("status")
def status_cmd(pool: str = POOL, home: Path | None = HOME,
               as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """The pool's promotion record and audit trail."""
    from inboxlab.promotion import status

    st = status(_home(home), pool)
    if as_json:
        typer.echo(json.dumps(st, indent=2, sort_keys=True, default=str))
        return
    typer.echo(f"{pool}: {st['state']} {st['stage_percent']:g} % -> "
               f"candidate {st['candidate_version']}, current {st['current_version']}")
    for a in st["audit"]:
        typer.echo(f"  #{a['n']} {a['action']:<8} {a['state']:<12} {a['actor']}: {a['reason']}")


@promote_app.command("advance")
def advance_cmd(pool: str = POOL, home: Path | None = HOME, actor: str | None = ACTOR,
                reason: str = typer.Option("manual", "--reason")) -> None:
    """Move the canary to the next stage (1, 10, 25, 50, 100 %)."""
    from inboxlab.promotion import advance

    _say(advance(_home(home), pool, actor=actor, reason=reason))


@promote_app.command("rollback")
def rollback_cmd(pool: str = POOL, home: Path | None = HOME, actor: str | None = ACTOR,
                 reason: str = typer.Option("manual", "--reason")) -> None:
    """End the canary; the current policy takes all traffic."""
    from inboxlab.promotion import rollback

    _say(rollback(_home(home), pool, actor=actor, reason=reason))


@promote_app.command("check")
def check_cmd(pool: str = POOL, home: Path | None = HOME, actor: str | None = ACTOR,
              min_outcomes: int = typer.Option(200, "--min-outcomes", min=1),
              since: float | None = typer.Option(None, "--since",
                                                 help="epoch seconds (default: stage start)"),
              ) -> None:
    """Judge the canary against the control from warehouse events; advance or roll back."""
    from inboxlab.promotion import check

    res = check(_home(home), pool, actor=actor, since=since, min_outcomes=min_outcomes)
    typer.echo(f"{pool}: {res['verdict']}: {res['reason']}")
    if "step" in res:
        _say(res["step"])


@promote_app.command("watch")
def watch_cmd(pool: str = POOL, home: Path | None = HOME, actor: str | None = ACTOR,
              spool: list[str] = typer.Option(  # noqa: B008
                  [], "--spool", help="engine spool(s) whose events to load before each check"),
              every: float = typer.Option(60.0, "--every", min=0.0,
                                          help="seconds between checks"),
              min_outcomes: int = typer.Option(200, "--min-outcomes", min=1),
              max_checks: int | None = typer.Option(None, "--max-checks", min=1,
                                                    help="stop after N checks"),
              ) -> None:
    """Run the rollout unattended: load the engines' new events, judge the canary, advance or
    roll back, every --every seconds, until the pool is promoted or rolled back."""
    import signal
    import threading

    from inboxlab.promotion import check, status
    from inboxlab.warehouse.outbox import ingest_spool

    root = _home(home)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    checks = 0
    while not stop.is_set():
        for path in spool:
            ingest_spool(path, root)
        st = status(root, pool)
        if st["state"] != "canary":
            typer.echo(f"{pool}: {st['state']}: nothing to watch "
                       f"(current {st['current_version']})")
            return
        res = check(root, pool, actor=actor, min_outcomes=min_outcomes)
        checks += 1
        typer.echo(f"{pool}: {res['verdict']}: {res['reason']}")
        if "step" in res:
            _say(res["step"])
            if res["step"]["state"] in ("promoted", "rolled_back"):
                return
        if max_checks is not None and checks >= max_checks:
            return
        stop.wait(every)
    typer.echo(f"{pool}: watch stopped; the canary stays at its stage")


def register(app: typer.Typer) -> None:
    """Add the ``promote`` sub-typer."""
    app.add_typer(promote_app, name="promote")
