"""Config reload without restart: notice when the site config file changes, and swap it in.

A valid new config replaces the running one atomically (features keep their state, policies
keep what they learned); an invalid one is refused with its precise error and the running
config stays. The admin route ``POST /v1/admin/reload`` does the same on demand.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from trimtab.config import ConfigError, SiteConfig

log = logging.getLogger("trimtab.reload")


class ConfigWatcher:
    """Polls one config file's modification time; call :meth:`check` periodically."""

    def __init__(self, path: str, reload: Callable[[], SiteConfig]) -> None:
        self.path = path
        self.reload = reload
        self.last_error = ""
        self._stamp = self._mtime()

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def check(self) -> bool:
        """Reload if the file changed since the last check; True when a new config is live."""
        if not self.path:
            return False
        stamp = self._mtime()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.reload()
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("config change refused, the running config stays: %s", exc)
            return False
        self.last_error = ""
        log.info("config reloaded from %s", self.path)
        return True
