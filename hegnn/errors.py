"""The library's input error: names the offending field, for every layer above.

Raised by the input rules (species, required inputs, heavy atoms) and the graph
builders (cell); the service maps it once to HTTP 422, the CLI and the ASE
calculator show its message.
"""

Loc = tuple[str | int, ...]


class InputError(ValueError):
    """Input a model cannot take. ``loc`` is the field path, e.g. ``("numbers",)``;
    ``field`` the same as text (``"structures.2.numbers"``)."""

    def __init__(self, loc: str | Loc, message: str) -> None:
        self.loc: Loc = (loc,) if isinstance(loc, str) else tuple(loc)
        self.message = message
        super().__init__(f"{self.field}: {message}")

    @property
    def field(self) -> str:
        return ".".join(map(str, self.loc))

    def under(self, *prefix: str | int) -> "InputError":
        """The same error with ``prefix`` put before its field path."""
        return type(self)((*prefix, *self.loc), self.message)
