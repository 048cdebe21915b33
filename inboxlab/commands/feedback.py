"""``inboxlab feedback parse FILE...``: read bounces and complaint reports into JSON lines.

Owns the command-line face of ``engine.feedback``: one JSON object per input file (``-``
is stdin), in argument order. A file that cannot be read (missing, a directory, not
readable) or does not parse becomes ``kind: unknown`` with a ``reason``; the exit code
is 0 whenever every argument was handled. Must not hold parsing logic itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

#: Largest input read per file; a report is a few kB, a full original at most a few MB.
MAX_BYTES = 50 * 1024 * 1024


def read_input(name: str) -> bytes | str:
    """The bytes of ``name`` (``-`` is stdin), or a one-line reason it could not be read."""
    if name == "-":
        return sys.stdin.buffer.read(MAX_BYTES + 1)
    path = Path(name)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot read: {exc.strerror or type(exc).__name__}"
    return data


def parse_one(name: str) -> dict[str, Any]:
    """One output record for one argument."""
    from engine.feedback import parse

    data = read_input(name)
    if isinstance(data, str):
        return {"file": name, "kind": "unknown", "reason": data}
    if len(data) > MAX_BYTES:
        return {"file": name, "kind": "unknown", "reason": f"larger than {MAX_BYTES} bytes"}
    return {"file": name, **parse(data).as_dict()}


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        name="feedback",
        help="Bounces (DSNs) and feedback reports (ARF).",
        no_args_is_help=True,
    )

    @sub.command("parse")
    def parse_cmd(
        files: Annotated[
            list[str],
            typer.Argument(help="Message files (.eml); '-' reads one message from stdin."),
        ],
    ) -> None:
        """Parse each message and print one JSON line per file."""
        out = sys.stdout
        for name in files:
            record = parse_one(name)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()

    app.add_typer(sub, name="feedback")
