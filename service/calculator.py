"""RemoteCalculator: an ASE calculator backed by a hegnn-serve URL. Imports no torch."""

from typing import Any

from ase import Atoms
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)

from hegnn_serve.service.client import HEGNNClient


class RemoteCalculator(Calculator):
    """Energy (eV) and forces (eV/Å) of a potential model served at ``url``.

    ``RemoteCalculator("http://127.0.0.1:8000", "md17-aspirin-ff-hegnn")`` replaces an
    in-process calculator in any ASE script. At construction it reads the model card:
    a dynamics model is refused, and the card's species are checked before each
    request. ASE's ``check_state`` caching applies: unchanged atoms cost no request.
    The cell and pbc are sent when ``atoms.pbc.any()``. Pass ``client`` to share one
    :class:`HEGNNClient` (its connection) between calculators; it is then not closed
    by :meth:`close`. ``todict()`` gives url and model; the calculator pickles and
    deep-copies (the copy reconnects on first use).

    A committee model adds ``energy_std`` (eV), ``forces_std`` (per atom, eV/Å) and
    ``max_force_std`` (eV/Å) to ``calc.results``, as ``hegnn.HEGNNCalculator``
    does; ``threshold`` is its card's calibrated ``max_force_std`` flag level.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    uncertainty_properties = ["energy_std", "forces_std", "max_force_std"]

    def __init__(
        self,
        url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        client: HEGNNClient | None = None,
        timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        if model is None or (url is None and client is None):
            raise ValueError("RemoteCalculator needs a url (or client) and a model")
        super().__init__(**kwargs)
        self.url = client.url if client is not None else str(url).rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self._owns_client = client is None
        self._client = client
        self.model = model
        self.card = self.client.model(model)
        if self.card.get("task") != "potential":
            raise ValueError(
                f"model {model!r} has task {self.card.get('task')!r}; "
                "RemoteCalculator needs a potential model (energy and forces)"
            )
        self.species = frozenset(int(z) for z in self.card["model"]["species"])
        committee = self.card.get("committee")
        uncertainty = committee.get("uncertainty", {}) if committee else {}
        self.threshold: float | None = uncertainty.get("threshold_max_force_std")
        if committee:
            self.implemented_properties = [
                *type(self).implemented_properties,
                *self.uncertainty_properties,
            ]

    @property
    def client(self) -> HEGNNClient:
        """The HTTP client; opened on first use (also after unpickling)."""
        if self._client is None:
            self._client = HEGNNClient(
                self.url, api_key=self._api_key, timeout=self.timeout
            )
            self._owns_client = True
        return self._client

    def close(self) -> None:
        """Close the HTTP connection if this calculator opened it."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def todict(self, skip_default: bool = True) -> dict[str, Any]:
        """What rebuilds this calculator (ASE writes it into trajectories): the
        url, model and timeout; never the API key."""
        return {"url": self.url, "model": self.model, "timeout": self.timeout}

    def __getstate__(self) -> dict[str, Any]:
        """Pickles and deep copies carry no connection: the copy opens its own on
        first use (with the same url, key and timeout)."""
        state = self.__dict__.copy()
        state["_client"] = None
        state["_owns_client"] = True
        return state

    def check_species(self, atoms: Atoms) -> None:
        """ValueError naming the atomic numbers the model was not trained on."""
        unknown = sorted(set(atoms.numbers.tolist()) - self.species)
        if unknown:
            raise ValueError(
                f"model {self.model!r} supports atomic numbers {sorted(self.species)}; "
                f"these atoms contain {unknown}"
            )

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = properties or ["energy"]
        unknown = set(properties) - set(self.implemented_properties)
        if unknown:
            raise PropertyNotImplementedError(f"RemoteCalculator: {sorted(unknown)}")
        super().calculate(atoms, properties, system_changes)
        self.check_species(self.atoms)
        out = self.client.forces(self.model, self.atoms)
        self.results = {
            "energy": out.energy,
            "free_energy": out.energy,
            "forces": out.forces,
        }
        if out.forces_std is not None:
            self.results["energy_std"] = out.energy_std
            self.results["forces_std"] = out.forces_std
            self.results["max_force_std"] = out.max_force_std
