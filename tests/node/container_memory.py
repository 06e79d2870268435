"""A container's memory as its cgroup on the real node counts it (what the memory limit is enforced on).

The node's kubelet uses the cgroupfs driver below its own cgroupRoot (hack/localcluster/node.py):
``<root>/kubepods[/burstable|/besteffort]/pod<uid>/<container id>`` in every hierarchy. On a cgroup v1
host the memory controller gives ``memory.max_usage_in_bytes`` (the peak of what the limit counts:
resident memory *and* page cache, e.g. a staging file being written), ``memory.stat`` (``rss`` apart)
and ``memory.oom_control`` (``oom_kill``: the kernel's OOM kills in that cgroup); on cgroup v2,
``memory.peak``, ``memory.stat`` (``anon``) and ``memory.events`` (``oom_kill``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def _stat(directory: Path) -> dict[str, int]:
    out = {}
    for line in (directory / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


@dataclass
class ContainerMemory:
    directory: Path
    v1: bool
    rss_peak: int = 0  # sampled: the largest resident (anonymous) memory seen
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def of(cls, cluster, pod: dict, container: str) -> "ContainerMemory":
        status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == container)
        cid = status["containerID"].split("://", 1)[1]
        uid = pod["metadata"]["uid"]
        root = cluster.node.cgroup_root
        for base, v1 in ((CGROUP_FS / "memory" / root, True), (CGROUP_FS / root, False)):
            if base.is_dir():
                found = [p / cid for p in base.rglob(f"pod{uid}") if (p / cid).is_dir()]
                if found:
                    return cls(found[0], v1)
        raise AssertionError(f"no memory cgroup for container {container} ({cid}) of pod {uid} under {root}")

    def _read(self, name: str) -> str:
        return (self.directory / name).read_text()

    def reset_peak(self) -> None:
        """Counts the peak from now on (cgroup v1: writing 0 resets max_usage_in_bytes; v2 has no reset)."""
        if self.v1:
            (self.directory / "memory.max_usage_in_bytes").write_text("0\n")
        self.rss_peak = 0

    def peak(self) -> int:
        return int(self._read("memory.max_usage_in_bytes" if self.v1 else "memory.peak"))

    def limit(self) -> int | None:
        value = self._read("memory.limit_in_bytes" if self.v1 else "memory.max").strip()
        return None if value == "max" else int(value)

    def oom_kills(self) -> int:
        text = self._read("memory.oom_control" if self.v1 else "memory.events")
        return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("oom_kill ")), 0)

    def rss(self) -> int:
        s = _stat(self.directory)
        return s.get("total_rss", s.get("rss", 0)) if self.v1 else s.get("anon", 0)

    def start_sampling(self, interval: float = 0.25) -> None:
        def loop():
            while not self._stop.wait(interval):
                try:
                    self.rss_peak = max(self.rss_peak, self.rss())
                    self.samples += 1
                except OSError:  # the container went away: its restart count tells the story
                    return

        self._thread = threading.Thread(target=loop, name=f"memory-{self.directory.name[:12]}", daemon=True)
        self._thread.start()

    def stop_sampling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def mib(n: int) -> float:
    return round(n / (1 << 20), 1)


