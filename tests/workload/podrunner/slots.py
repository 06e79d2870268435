"""One slot per test session on this machine: sessions running at the same time (CI and a developer, two
terminals) get different pod IPs (10.200.<slot>.0/24), Service images (127.(96+slot).x.y) and ingress
address (127.80.<slot>.1), so their listeners never collide. A slot is an exclusive flock on
`${XDG_CACHE_HOME:-~/.cache}/mlflow-operator/podrunner/slot-<n>.lock`, released when the process ends.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

MAX_SLOTS = 50


class Slot:
    def __init__(self) -> None:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlflow-operator" / "podrunner"
        base.mkdir(parents=True, exist_ok=True)
        for n in range(MAX_SLOTS):
            fh = open(base / f"slot-{n}.lock", "a")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            self.number, self._fh = n, fh
            return
        raise RuntimeError(f"pod runner: all {MAX_SLOTS} slots under {base} are taken by running test sessions")

    @property
    def ingress_address(self) -> str:
        return f"127.80.{self.number}.1"

    def release(self) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
