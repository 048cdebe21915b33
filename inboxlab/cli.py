"""The ``inboxlab`` command line: one typer app, one error handler at the edge.

Each module in ``inboxlab/commands/`` defines ``register(app: typer.Typer) -> None`` and
is found automatically, so commands live beside the code they drive. Modules must import
heavy libraries inside their command functions, not at the top, to keep start-up fast.

Errors: an ``InboxlabError`` (bad input, bad config, bad query) prints one line to
stderr and exits with its ``exit_code``; a usage error prints one line and exits 2;
anything else prints one line and exits 70 (``INBOXLAB_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import typer

try:  # typer >= 0.16 vendors click; older releases use the click package
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover
    from click import exceptions as cx  # type: ignore[no-redef]

from engine.errors import InboxlabError

app = typer.Typer(
    name="inboxlab",
    help="inboxlab: a deliverability lab: policy core, provider models, engine and warehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """inboxlab: try a sending policy against a faithful model before it touches a real IP."""


def _register_commands() -> None:
    from inboxlab import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"inboxlab.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def _fail(message: str, code: int) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"inboxlab: error: {first}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="inboxlab")
        # without standalone mode, click returns a command's typer.Exit code instead of exiting
        if isinstance(result, int) and result != 0:
            sys.exit(result)
    except InboxlabError as exc:
        _fail(str(exc), exc.exit_code)
    except cx.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            print(exc.ctx.get_help())
        sys.exit(0)
    except typer.Abort:
        _fail("aborted", 130)
    except cx.UsageError as exc:
        _fail(f"{exc.format_message()} (see --help)", 2)
    except cx.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # the edge: never show a user a traceback
        if os.environ.get("INBOXLAB_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc}", 70)


if __name__ == "__main__":
    main()
