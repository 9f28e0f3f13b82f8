"""A typer group whose sub-commands are imported only when they run.

A sub-command is named by ``"module:attribute"``, a typer command function or a
``typer.Typer`` group, with the one-line summary that the group's help lists. The
module is imported when the sub-command runs, shows its own help or completes its
arguments, and the command is built exactly as ``app.command(name)(function)`` or
``app.add_typer(group, name=name)`` would build it, so its options and help are the
same; the group's own help and command-name completion use the summaries alone.
"""

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class LazyCommand:
    """``target`` is ``"module:attribute"``; ``summary`` the first paragraph of its
    help (what the parent's help lists; a test keeps the two equal)."""

    target: str
    summary: str

    def load(self, name: str) -> Any:
        """The command (a typer-built click command or group), importing its module."""
        module, _, attribute = self.target.partition(":")
        obj = getattr(importlib.import_module(module), attribute)
        parent = typer.Typer(add_completion=False)
        if isinstance(obj, typer.Typer):
            parent.add_typer(obj, name=name)
        else:
            parent.command(name)(obj)
        return typer.main.get_group(parent).commands[name]


class _Unloaded(TyperCommand):
    """Stands for a sub-command that is not imported yet: a name and a summary."""


class LazyGroup(TyperGroup):
    """Use as ``typer.Typer(cls=...)`` in a subclass that sets ``lazy_commands``."""

    lazy_commands: ClassVar[dict[str, LazyCommand]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._summaries_only = False
        for name, lazy in self.lazy_commands.items():
            self.commands.setdefault(name, _Unloaded(name, help=lazy.summary))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if isinstance(command, _Unloaded) and not self._summaries_only:
            command = self.lazy_commands[cmd_name].load(cmd_name)
            self.commands[cmd_name] = command
        return command

    @contextmanager
    def _summaries(self) -> Iterator[None]:
        self._summaries_only = True
        try:
            yield
        finally:
            self._summaries_only = False

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with self._summaries():
            return super().format_help(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        with self._summaries():
            return super().shell_complete(ctx, incomplete)
