"""``inboxlab sandbox``: run the provider models behind real SMTP servers on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("sandbox")
    def sandbox(
        config: Annotated[Path, typer.Option("--config", help="Sandbox TOML.")] = Path(
            "fixtures/sandbox.toml"),
        home: Annotated[Path | None, typer.Option(
            "--home", envvar="INBOXLAB_HOME", help="Home folder.")] = None,
        time_scale: Annotated[float | None, typer.Option(
            "--time-scale", help="Model seconds per real second.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        providers: Annotated[str, typer.Option("--providers", help="Comma-separated subset.")] = "",
        dns: Annotated[str | None, typer.Option(
            "--dns", help="HOST:PORT of a DNS server (inboxlab dns serve): check DKIM, SPF "
            "and DMARC with real lookups instead of the config's tables.")] = None,
    ) -> None:
        """Run one SMTP server per provider until interrupted; print where each listens."""
        import asyncio
        import json
        import signal

        from engine.errors import InputError
        from sim.sandbox.config import load_config
        from sim.sandbox.server import Sandbox, new_event_loop

        if time_scale is not None and time_scale <= 0:
            raise InputError("--time-scale must be > 0")
        only = [p.strip() for p in providers.split(",") if p.strip()] or None
        cfg = load_config(config, only=only, time_scale=time_scale, dns=dns)

        async def main() -> None:
            box = Sandbox(cfg, home or Path("var"))
            try:
                addresses = await box.start()
            except OSError as exc:
                raise InputError(f"cannot listen: {exc.strerror or exc}") from None
            if as_json:
                typer.echo(json.dumps({n: f"{h}:{p}" for n, (h, p) in addresses.items()}))
            else:
                for name, (host, port) in addresses.items():
                    typer.echo(f"{name} → {host}:{port}")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await box.stop()

        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(main())
