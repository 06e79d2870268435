"""A TCP forwarder from the host's loopback into a network namespace (standard library only).

    python3 forward.py --netns /proc/<pid>/ns/net --target 10.200.0.2:6443 --port-file FILE [--port N]

Binds 127.0.0.1:<free port> (or N) in the namespace it starts in (the host's), writes the port to
FILE, then joins the target namespace: every connection it accepts is relayed to a socket
opened inside that namespace. So kubeconfigs on the host say https://127.0.0.1:<port> while
the API server listens only on the node's address inside the cluster's namespace.
Run as a process of its own so it outlives `hack/cluster up`.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError as exc:
        print(f"forward: connect {target[0]}:{target[1]} failed: {exc}", file=sys.stderr, flush=True)
        client.close()
        return
    upstream.settimeout(None)
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--netns", required=True)
    parser.add_argument("--target", required=True, help="host:port inside the namespace")
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--port", type=int, default=0, help="the loopback port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    target = (host, int(port))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    # Join the namespace before any relay thread exists: threads inherit it, the listener stays
    # in the host's namespace where it was created.
    _setns(args.netns)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{listener.getsockname()[1]}\n")
    os.replace(tmp, args.port_file)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
