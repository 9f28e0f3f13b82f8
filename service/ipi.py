"""`hegnn ipi`: an i-PI driver (client) that answers force requests with a potential
model, through the HTTP service or in process.

An i-PI server (i-PI itself, ASE's ``SocketIOCalculator``, or any code that speaks the
i-PI socket protocol) owns the dynamics and sends positions and cell; this driver
answers energy, forces and virial. The protocol itself is ASE's ``SocketClient``
(units converted there: Bohr and Hartree on the wire, Å and eV here). The protocol
carries no elements, so the driver reads them once from a structure file with the
atoms in the server's order. Not for dynamics models (they predict positions, not
forces) and not for constant-pressure runs: the virial sent is zero.
"""

import logging
import socket
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.socketio import SocketClient, SocketClosed, actualunixsocketname
from ase.io import read

logger = logging.getLogger(__name__)

# The server closed or dropped the connection: i-PI at the end of a run (after EXIT,
# or killed), SocketIOCalculator.close() (no EXIT), or a server that died mid-step.
CLOSED = (SocketClosed, BrokenPipeError, ConnectionResetError)
# Nothing listens (yet) at the address: retried until --connect-timeout.
NOT_LISTENING = (FileNotFoundError, ConnectionRefusedError)


class DriverError(Exception):
    """A failure the user can act on: ``hegnn ipi`` prints it and exits with 1."""


def remote_calculator(
    url: str, model: str, api_key: str | None
) -> tuple[Calculator, set[int]]:
    """RemoteCalculator for ``model`` at ``url`` and the model's species; DriverError
    when the server is not reachable, the model is unknown or not a potential."""
    from hegnn_serve.service.calculator import RemoteCalculator
    from hegnn_serve.service.client import HEGNNConnectionError, HEGNNServiceError

    try:
        calc = RemoteCalculator(url, model, api_key=api_key)
    except HEGNNConnectionError as err:
        raise DriverError(f"--url: {err}") from err
    except HEGNNServiceError as err:  # 404 names the served models; 401: --api-key
        raise DriverError(str(err)) from err
    except ValueError as err:  # a dynamics model
        raise DriverError(f"--model: {err}") from err
    return calc, set(calc.species)


def local_calculator(
    checkpoint: Path, model: str, device: str | None, threads: int
) -> tuple[Calculator, set[int]]:
    """hegnn.HEGNNCalculator of ``checkpoint/model`` (a folder of checkpoints, as
    `hegnn serve` takes) or of ``checkpoint`` itself when that folder is ``model``,
    and the model's species. Sets torch's threads for this process."""
    import torch

    from hegnn import HEGNNCalculator

    torch.set_num_threads(threads)
    folder = checkpoint / model
    if not (folder / "card.json").is_file():
        if checkpoint.name != model or not (checkpoint / "card.json").is_file():
            raise DriverError(f"--checkpoint: no checkpoint {model!r} in {checkpoint}")
        folder = checkpoint
    try:
        calc = HEGNNCalculator(folder, device=device)
    except ValueError as err:  # a dynamics model
        raise DriverError(f"--model: {err}") from err
    return calc, {int(z) for z in calc.card.model.species}


def connect(
    host: str | None, port: int | None, unix: str | None, timeout: float
) -> SocketClient:
    """A SocketClient connected to ``host:port`` or to the unix socket
    /tmp/ipi_``unix``, retrying for ``timeout`` seconds while nothing listens."""
    where = actualunixsocketname(unix) if unix else f"{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            return SocketClient(host=host, port=port, unixsocket=unix)
        except NOT_LISTENING as err:
            if time.monotonic() >= deadline:
                raise DriverError(
                    f"no i-PI server listens at {where} (waited {timeout:g} s): {err}"
                ) from err
            time.sleep(0.1)
        except socket.gaierror as err:
            raise DriverError(f"--address: unknown host {host!r}: {err}") from err


def drive(client: SocketClient, atoms: Atoms) -> int:
    """Answer the server's requests until it says EXIT or closes the connection;
    returns the number of force evaluations. ``atoms`` carries the calculator; its
    positions and cell are overwritten by each request."""
    receive = client.protocol.recvposdata

    def checked_posdata() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cell, icell, positions = receive()
        if len(positions) != len(atoms):
            raise DriverError(
                f"the server sent {len(positions)} atoms; --structure has {len(atoms)}"
            )
        return cell, icell, positions

    client.protocol.recvposdata = checked_posdata
    evaluations = 0
    try:
        for _ in client.irun(atoms, use_stress=False):
            evaluations += 1
    except CLOSED:
        pass  # closed mid-step: as final as EXIT
    finally:
        client.close()
    return evaluations


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); IPv4 or a name (ASE's client is AF_INET)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(
            f"expected HOST:PORT, got {address!r}", param_hint="--address"
        )
    return host, int(port)


def ipi(
    model: Annotated[str, typer.Option(help="model name (a potential)")],
    structure: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="file ASE reads (xyz, pdb, ...) with the atoms in the server's "
            "order; gives the elements (and pbc), which the protocol does not send",
        ),
    ],
    url: Annotated[
        str | None, typer.Option(help="hegnn-serve URL: forces over HTTP")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="folder of checkpoint folders (or the model's own): forces in process"
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="i-PI server's HOST:PORT (inet socket)")
    ] = None,
    unix: Annotated[
        str | None,
        typer.Option(help="i-PI unix socket NAME, i.e. /tmp/ipi_NAME"),
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option(min=0, help="seconds to wait for the i-PI server")
    ] = 30.0,
    api_key: Annotated[
        str | None, typer.Option(envvar="HEGNN_API_KEY", help="with --url")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="with --checkpoint: cpu|cuda[:N]")
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            min=1, help="with --checkpoint: torch threads (molecules: 1 is fastest)"
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="debug|info|warning|error")] = "info",
) -> None:
    """Drive an i-PI server (i-PI, ASE's SocketIOCalculator) with a potential model.

    Forces come from a server (--url) or in process (--checkpoint); the i-PI server is
    reached at --address HOST:PORT or --unix NAME. Exits with 0 when the i-PI server
    ends the run or closes the connection.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request
    if (url is None) == (checkpoint is None):
        raise typer.BadParameter("give one of --url and --checkpoint")
    if (address is None) == (unix is None):
        raise typer.BadParameter("give one of --address and --unix")
    host, port = parse_address(address) if address else (None, None)
    try:
        atoms = read(structure, index=0)
    except Exception as err:  # ASE raises many kinds for an unreadable file
        raise typer.BadParameter(str(err), param_hint="--structure") from err
    if atoms.pbc.any():
        logger.warning("periodic structure: the virial sent is zero (no NPT)")
    try:
        if url is not None:
            atoms.calc, species = remote_calculator(url, model, api_key)
        else:
            atoms.calc, species = local_calculator(checkpoint, model, device, threads)
        unknown = sorted(set(atoms.numbers.tolist()) - species)
        if unknown:
            raise DriverError(
                f"--structure has atomic numbers {unknown}; model {model!r} knows "
                f"{sorted(species)}"
            )
        client = connect(host, port, unix, connect_timeout)
        logger.info("connected to %s", address or actualunixsocketname(unix))
        evaluations = drive(client, atoms)
    except DriverError as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from None
    logger.info("the i-PI server ended the run after %d force calls", evaluations)
