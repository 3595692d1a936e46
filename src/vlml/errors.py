"""Exceptions a user can cause. Each message says what arrived, where, and what was expected."""

from __future__ import annotations


class VlmlError(Exception):
    """Base class of every error vlml raises on purpose."""


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM (a scheduler preempting or timing out the job, torchrun
    stopping the other processes of a job one of which failed); raised by the `vlml` command
    so that a run stops as on Ctrl-C: marked interrupted, partial files kept for resuming."""


class DataError(VlmlError, ValueError):
    """A dataset file, catalog or label matrix is missing or malformed.

    `where` names the file (and line, id or key) so the message can point at it.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class UnknownNameError(VlmlError, KeyError):
    """A name chosen by the user (dataset, loss, encoder, ...) is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class ConfigError(VlmlError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class UnknownChoiceError(ConfigError, UnknownNameError):
    """A config value is not one of its allowed choices (often a registry's names)."""
