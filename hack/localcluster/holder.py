"""The process that holds a real node's namespaces (standard library only; run by node.py as
``unshare --net --mount --propagation private -- python3 -S holder.py <config.json>``).

In its fresh network namespace it brings up lo and a veth pair (the kernel here has no dummy
interface type) carrying the node's address, with a default route that ends inside the
namespace. In its private mount namespace it binds the cluster's own directories over the
fixed host paths containerd and the kubelet write (/run/containerd, /var/lib/kubelet, ...), so
those mounts vanish with the namespace and two clusters never share them. Then it waits for
SIGTERM; its command line names the config file, i.e. the cluster's directory, so a later
start can recognise what a dead test run left behind.
"""
import json
import os
import signal
import subprocess
import sys


def main() -> int:
    with open(sys.argv[1]) as fh:
        cfg = json.load(fh)

    def run(*argv: str) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"holder: {' '.join(argv)} failed: {proc.stderr.strip()}")

    run("ip", "link", "set", "lo", "up")
    run("ip", "link", "add", cfg["interface"], "type", "veth", "peer", "name", cfg["peer"])
    run("ip", "addr", "add", cfg["address"], "dev", cfg["interface"])
    run("ip", "link", "set", cfg["interface"], "up")
    run("ip", "link", "set", cfg["peer"], "up")
    # Service IPs are routed before kube-proxy's OUTPUT DNAT: a default route must exist. It
    # leads to the veth peer, which holds no address: nothing can leave the namespace.
    run("ip", "route", "add", "default", "dev", cfg["interface"])
    for name, value in cfg.get("sysctls", {}).items():
        path = "/proc/sys/" + name.replace(".", "/")
        if os.path.exists(path):
            with open(path, "w") as fh:
                fh.write(value)
    for source, target in cfg["binds"]:
        run("mount", "--bind", source, target)
    with open(cfg["ready_file"], "w") as fh:
        fh.write(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
