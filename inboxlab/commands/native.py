"""``inboxlab native``: build and inspect the compiled core (``engine.native``).

``native build`` compiles the policy core and the simulation's per-dispatch modules with
mypyc into ``build/native/``;
``native status`` says whether this process runs them compiled, and why not. Errors go to
the CLI edge as ``StateError`` (one line).
"""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    native_app = typer.Typer(help="The policy core and the simulation's hot path compiled with "
                                  "mypyc (same source, faster).",
                             no_args_is_help=True)
    app.add_typer(native_app, name="native")

    @native_app.command("build")
    def build() -> None:
        """Compile the policy core and the simulation's hot modules into build/native
        (needs the dev extra and a C compiler)."""
        import time

        from engine import native

        t0 = time.perf_counter()
        manifest = native.build()
        status, _ = native.check()
        typer.echo(f"built {len(manifest['sources'])} modules into "
                   f"{native.OUT.relative_to(native.ROOT)} in {time.perf_counter() - t0:.1f} s; "
                   f"new processes run them: {status}")

    @native_app.command("status")
    def status(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Whether this process runs the compiled core, and why not."""
        import json

        from engine import native
        from engine.policy import scheduler
        from sim import world

        compiled = all(not str(getattr(m, "__file__", "")).endswith(".py")
                       for m in (scheduler, world))
        if as_json:
            typer.echo(json.dumps({"status": native.STATUS, "compiled": compiled,
                                   "modules": list(native.MODULES)}))
        else:
            typer.echo(f"policy core: {'compiled' if compiled else 'interpreted'} "
                       f"({native.STATUS})")
