"""`hegnn serve`: run the HTTP service with uvicorn. Heavy imports happen on use."""

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer


def serve(
    host: Annotated[
        str | None, typer.Option(help="bind address [env HEGNN_HOST, 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port [env HEGNN_PORT, 8000]")
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="folder of checkpoint folders [env HEGNN_CHECKPOINTS]"),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto|cpu|cuda[:N] [env HEGNN_DEVICE, auto]")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug|info|warning|error [env HEGNN_LOG_LEVEL]")
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the force fields at start, ~2x faster on a CPU "
            "[env HEGNN_COMPILE, off]",
        ),
    ] = None,
) -> None:
    """Serve every checkpoint folder over HTTP (OpenAPI docs at /docs).

    Other settings (limits, batching, API keys) come from HEGNN_* variables. On
    SIGTERM it stops accepting, gives running jobs HEGNN_DRAIN_S to finish, stops
    the rest (503) and exits with status 0.
    """
    import uvicorn
    from pydantic import ValidationError

    from hegnn_serve.service.app import create_app
    from hegnn_serve.service.settings import Settings

    DrainingServer = _draining_server()  # noqa: N806 (a class)

    given = {
        "host": host,
        "port": port,
        "checkpoints": checkpoints,
        "device": device,
        "log_level": log_level,
        "compile": compile,
    }
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        raise typer.BadParameter(str(err)) from err
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the service logs one JSON line per request itself
        # A backstop: jobs stop themselves at HEGNN_DRAIN_S (begin_drain).
        timeout_graceful_shutdown=settings.drain_s + 2,
    )
    server = DrainingServer(config)
    server.app_to_drain = app
    # uvicorn re-raises a handled SIGTERM once it has shut down; under this handler
    # that ends the process with status 0, a clean stop for Docker and Kubernetes.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_cleanly) if main else None
    try:
        server.run()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise SystemExit(3)  # uvicorn's status for a failed start


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _draining_server() -> type:
    import uvicorn

    from hegnn_serve.service.app import begin_drain

    class DrainingServer(uvicorn.Server):
        """uvicorn's server that, on SIGTERM/SIGINT, first tells the app to drain:
        no new jobs; running jobs stop after HEGNN_DRAIN_S (503). uvicorn stops
        accepting connections and waits for the open requests meanwhile."""

        app_to_drain = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.app_to_drain is not None:
                begin_drain(self.app_to_drain)
            super().handle_exit(sig, frame)

    return DrainingServer
