"""``inboxlab config``: check a lab config, show resolved shaping, hash an API key.

Owns only the command-line surface of ``engine.config``: argument parsing and output.
``config check`` is the one command that prints several error lines (each problem once,
``FILE: key.path: reason`` on stderr, exit 2); everything else fails through the CLI edge.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

config_app = typer.Typer(
    name="config",
    help="Config as code: check a lab config, show resolved shaping, hash API keys.",
    no_args_is_help=True,
)


@config_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The lab config (TOML), e.g. fixtures/lab.toml.")],
) -> None:
    """Check FILE and every policy file it names; print every problem found."""
    from engine.config import load_config
    from engine.errors import ConfigErrors

    try:
        lab = load_config(file)
    except ConfigErrors as exc:
        unreadable = len(exc.problems) == 1 and not exc.problems[0].key
        if unreadable and exc.problems[0].file == str(file):
            raise exc.problems[0] from None  # missing or not TOML: one line at the edge
        for problem in exc.problems:
            print(str(problem).replace("\n", " "), file=sys.stderr)
        # SystemExit, not typer.Exit: the edge runs click with standalone_mode=False,
        # where typer.Exit's code would be returned and dropped.
        raise SystemExit(2) from None
    typer.echo(lab.summary())


@config_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="The lab config (TOML).")],
    pool: Annotated[str | None, typer.Option(help="Only this pool.")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider.")] = None,
    domain: Annotated[
        str | None, typer.Option(help="Include the layers of this recipient domain.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the resolved shaping per pool x provider and which layer set each field."""
    import json

    from engine.config import load_config
    from engine.config.shaping import SHAPING_FIELD_NAMES
    from engine.errors import InputError

    lab = load_config(file)
    pools = [pool] if pool is not None else list(lab.pools)
    providers = [provider] if provider is not None else sorted(lab.profiles)
    for name in pools:
        if name not in lab.pools:
            raise InputError(f"unknown pool {name!r} (known: {', '.join(sorted(lab.pools))})")
    for name in providers:
        if name not in lab.profiles:
            known = ", ".join(sorted(lab.profiles)) or "none loaded"
            raise InputError(f"unknown provider {name!r} (known: {known})")
    rows = []
    for p in pools:
        version = lab.policy_for(p).model.version
        for prov in providers:
            resolved = lab.shaping_layers(p, prov, domain)
            rows.append({"pool": p, "provider": prov, "domain": domain, "policy": version}
                        | resolved.as_dict())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        where = f" domain {domain}" if domain else ""
        typer.echo(f"pool {row['pool']} -> {row['provider']}{where} (policy {row['policy']})")
        typer.echo("  layers: " + " < ".join(layer["name"] for layer in row["layers"]))
        for key in SHAPING_FIELD_NAMES:
            typer.echo(f"  {key:<28} {row['resolved'][key]!s:<14} {row['source'][key]}")


@config_app.command("hash-key")
def hash_key_cmd(
    key: Annotated[str, typer.Argument(help="The API key, or '-' to read it from stdin.")],
) -> None:
    """Print the stored form of an API key (sha256:<hex>) for a tenant's api_keys."""
    from engine.config import hash_key
    from engine.errors import InputError

    if key == "-":
        key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        raise InputError("an API key cannot be empty")
    typer.echo(hash_key(key))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
