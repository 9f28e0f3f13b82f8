"""`hegnn serve`: run the HTTP service with uvicorn. Heavy imports happen on use."""

import logging
from pathlib import Path
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
) -> None:
    """Serve every checkpoint folder over HTTP (OpenAPI docs at /docs).

    Other settings (limits, batching, API keys) come from HEGNN_* variables.
    """
    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.settings import Settings

    given = {
        "host": host,
        "port": port,
        "checkpoints": checkpoints,
        "device": device,
        "log_level": log_level,
    }
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        raise typer.BadParameter(str(err)) from err
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the service logs one JSON line per request itself
    )
