"""``inboxlab dlq list|show|replay``: dead letters of a live engine's spool.

Owns the command-line face of ``engine.spool.dlq``: ``--home DIR`` names the engine home
(the ``inboxlab serve --home`` folder holding ``spool.db``), or ``--spool`` names the spool
itself (a SQLite file or a shared ``postgresql://...?schema=NAME`` URL); filters ``--tenant --campaign
--provider --reason --state``; listings are redacted (recipient masked, no body). Opens the
spool without crash recovery (a running engine owns that). Holds no logic of its own.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

Home = Annotated[Path, typer.Option("--home", help="engine home (holds spool.db)")]
Tenant = Annotated[str | None, typer.Option("--tenant", help="only this tenant")]
Campaign = Annotated[str | None, typer.Option("--campaign", help="only this campaign")]
Provider = Annotated[str | None, typer.Option("--provider", help="only this provider")]
Reason = Annotated[str | None, typer.Option("--reason", help="reason contains this text")]
State = Annotated[str | None, typer.Option(
    "--state", help="dead_lettered, expired or bounced")]
SpoolOpt = Annotated[str | None, typer.Option(
    "--spool", help="the spool itself: a SQLite file or postgresql://...?schema=NAME "
    "(instead of --home)")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")]


def _open(home: Path, spool: str | None = None) -> Any:
    """The spool, opened without crash recovery or takeover (a running engine owns them).
    Raises ``InputError`` when there is none or the server cannot be reached."""
    from engine.errors import ConfigError, InputError
    from engine.spool import Spool, is_pg_target

    if spool is not None and is_pg_target(spool):
        from engine.spool.pg import PgSpool, redact

        try:
            return PgSpool(spool, recover=False, run_id="dlq")
        except ConfigError as exc:
            raise InputError(f"--spool {redact(spool)}: {exc.reason}") from None
    path = Path(spool) if spool is not None else home / "spool.db"
    if not path.is_file():
        raise InputError(f"no spool at {path}" + (
            "" if spool is not None else " (is --home the folder `inboxlab serve` uses?)"))
    return Spool(path, recover=False)


def _filter(tenant: str | None, campaign: str | None, provider: str | None,
            reason: str | None, state: str | None) -> Any:
    from engine.spool.dlq import Filter

    return Filter(tenant=tenant, campaign=campaign, provider=provider, reason=reason,
                  state=state)


def _when(value: str | None) -> float | None:
    from engine.errors import InputError

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--not-before: not epoch seconds or an ISO time: {value!r}") from None
    if dt.tzinfo is None:
        raise InputError("--not-before: give a time zone (e.g. 2026-03-02T08:00+00:00)")
    return dt.timestamp()


def register(app: typer.Typer) -> None:
    """Add the ``dlq`` sub-commands."""
    sub = typer.Typer(name="dlq", help="Dead letters: list, show, replay.",
                      no_args_is_help=True)

    @sub.command("list")
    def list_cmd(home: Home = Path(".inboxlab"), spool: SpoolOpt = None, tenant: Tenant = None,
                 campaign: Campaign = None, provider: Provider = None, reason: Reason = None,
                 state: State = None, limit: int = 1000, as_json: AsJson = False) -> None:
        """Failed recipients (recipient masked, no body)."""
        from engine.spool.dlq import DeadLetters

        db = _open(home, spool)
        try:
            rows = DeadLetters(db).list(_filter(tenant, campaign, provider, reason, state),
                                        limit=limit)
        finally:
            db.close()
        for r in rows:
            if as_json:
                typer.echo(json.dumps(r.as_dict()))
            else:
                typer.echo(f"{r.id}\t{r.tenant}\t{r.message_id}\t{r.recipient}\t{r.state}"
                           f"{' (ambiguous)' if r.ambiguous else ''}\t{r.provider or '-'}\t"
                           f"{r.pool or '-'}\t{r.attempts}\t{r.reason or '-'}")
        if not as_json:
            typer.echo(f"{len(rows)} dead letter(s)")

    @sub.command("show")
    def show_cmd(rid: Annotated[int, typer.Argument(help="recipient id from `dlq list`")],
                 home: Home = Path(".inboxlab"), spool: SpoolOpt = None,
                 tenant: Tenant = None) -> None:
        """One dead letter with its full attempt history (body redacted)."""
        from engine.spool.dlq import DeadLetters

        db = _open(home, spool)
        try:
            typer.echo(json.dumps(DeadLetters(db).show(rid, tenant=tenant), indent=2))
        finally:
            db.close()

    @sub.command("replay")
    def replay_cmd(home: Home = Path(".inboxlab"), spool: SpoolOpt = None, tenant: Tenant = None,
                   campaign: Campaign = None, provider: Provider = None,
                   reason: Reason = None, state: State = None,
                   pool: Annotated[str | None, typer.Option(
                       "--pool", help="ask for this pool")] = None,
                   not_before: Annotated[str | None, typer.Option(
                       "--not-before", help="epoch seconds or ISO time with zone")] = None,
                   ) -> None:
        """Requeue matching dead letters (once: repeating the same replay does nothing)."""
        from engine.spool.dlq import DeadLetters

        nb = _when(not_before)
        db = _open(home, spool)
        try:
            res = DeadLetters(db).replay(_filter(tenant, campaign, provider, reason, state),
                                         pool=pool, not_before=nb)
        finally:
            db.close()
        typer.echo(f"replayed {len(res.replayed)}, already replayed {len(res.already)} "
                   f"(key {res.key})")

    app.add_typer(sub, name="dlq")
