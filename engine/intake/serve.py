"""Run intake (uvicorn) and delivery (``engine.runner``) in one asyncio loop.

Owns startup (spool open with crash recovery, the per-home HMAC secret) and shutdown:
SIGTERM/SIGINT stop intake first, then the runner finishes in-flight sends and exits; a
restart on the same home resumes from the spool. It decides no policy.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path

from engine.config import LabConfig


def home_secret(home: Path) -> bytes:
    """The HMAC secret of tokens (``INBOXLAB_SECRET`` or ``<home>/secret``, made once)."""
    env = os.environ.get("INBOXLAB_SECRET")
    if env:
        return env.encode()
    path = home / "secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


async def serve(config: LabConfig, home: Path, *, host: str = "127.0.0.1", port: int = 8025,
                seed: int = 0, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    import uvicorn

    from engine.intake.app import create_app
    from engine.runner import Runner
    from engine.spool import Spool

    home.mkdir(parents=True, exist_ok=True)
    secret = home_secret(home)
    spool = Spool(home / "spool.db", run_id=f"serve-{os.getpid()}")
    runner = Runner(config, spool, secret=secret, seed=seed)
    app = create_app(config, spool, secret=secret, on_accept=runner.wake.set)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: (setattr(server, "should_exit", True), stop.set()))
    run_task = asyncio.create_task(runner.run(stop))
    srv_task = asyncio.create_task(server.serve())
    if ready is not None:
        while not server.started and not srv_task.done():
            await asyncio.sleep(0.02)
        ready.set()
    print(f"inboxlab: serving on http://{host}:{port} (spool {home / 'spool.db'}, "
          f"recovered {spool.recovered})", flush=True)
    await srv_task
    stop.set()
    await run_task
    spool.close()
