"""Errors a user can fix by changing the run config: they carry the name of the setting."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work here. `setting` names the field (e.g. "weights") so that the
    launch check can point at its place in the run config; the message says how to fix it."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
