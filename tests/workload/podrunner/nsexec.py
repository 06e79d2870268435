"""Start one container process: `python nsexec.py SPEC.json` (standard library only).

What a container runtime does with a resolved container, as far as a test stand-in needs:
- a private mount namespace: every volume bind-mounted at its mountPath (read-only when asked),
  the pod's own /etc/hosts (the kubelet-managed hosts file, plus the Service names: see network.py),
  and, for readOnlyRootFilesystem, the root filesystem remounted read-only (only in this namespace);
- a private UTS namespace whose host name is the pod's host name;
- the image (the server virtualenv) kept visible: a volume mounted over a directory that holds it
  (an emptyDir at /tmp while the cache is under /tmp) would hide it, so it is bound back at its
  own path, read-only, as a runtime keeps a container's root filesystem apart from its volumes;
- the working directory, then exec of the command found on the container's PATH.

The caller made this process a session leader (its own process group), so the runner can signal
the whole tree. If the runner's thread that started it goes away, it gets SIGTERM (PR_SET_PDEATHSIG).
A failure before exec is written to the spec's `error_file` and exits 128, like a runtime's StartError.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)


class StartError(Exception):
    pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise StartError(f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, flags: int, what: str) -> None:
    _check(libc.mount(source.encode() if source else None, target.encode(), None, flags, None), what)


def main(spec_path: str) -> None:
    with open(spec_path) as fh:
        spec = json.load(fh)
    # Opened now: the pod's mounts may hide the file's directory (the runner's workdir under /tmp).
    error_fd = os.open(spec["errorFile"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() == 1:
            raise StartError("the pod runner went away before the container started")
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare(mount, uts)")
        mount(None, "/", MS_REC | MS_PRIVATE, "making / private")
        hostname = spec["hostname"].encode()
        _check(libc.sethostname(hostname, len(hostname)), "sethostname")
        # Open every source first: a mount over /tmp must not hide a source that lives under /tmp.
        mounts = sorted(spec["mounts"], key=lambda m: m["target"].rstrip("/").count("/"))
        fds = [os.open(m["source"], os.O_PATH | os.O_CLOEXEC) for m in mounts]
        image_fd = os.open(spec["imageRoot"], os.O_PATH | os.O_CLOEXEC) if spec.get("imageRoot") else None
        for m, fd in zip(mounts, fds):
            if not os.path.lexists(m["target"]):
                raise StartError(f"mount point {m['target']} does not exist in the root filesystem")
            mount(f"/proc/self/fd/{fd}", m["target"], MS_BIND | MS_REC, f"mounting {m['source']} at {m['target']}")
            if m.get("readOnly"):
                mount(None, m["target"], MS_REMOUNT | MS_BIND | MS_RDONLY, f"making {m['target']} read-only")
        for fd in fds:
            os.close(fd)
        if image_fd is not None:
            _keep_visible(spec["imageRoot"], image_fd)
        if spec.get("readOnlyRootFilesystem"):
            mount(None, "/", MS_REMOUNT | MS_BIND | MS_RDONLY, "making the root filesystem read-only")
        try:
            os.chdir(spec["workingDir"])
        except OSError as e:
            raise StartError(f"chdir to working directory {spec['workingDir']}: {e.strerror}") from None
        argv, env = spec["argv"], spec["env"]
        if not argv:
            raise StartError("no command: neither the container nor the image gives one")
        exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", ""))
        if not exe or not os.access(exe, os.X_OK):
            raise StartError(f'exec: "{argv[0]}": executable file not found in $PATH')
    except (StartError, OSError) as e:
        os.write(error_fd, str(e).encode())
        os.close(error_fd)
        print(f"pod runner: container could not start: {e}", file=sys.stderr, flush=True)
        os._exit(128)
    os.close(error_fd)
    sys.stdout.flush()
    os.execve(exe, argv, env)


def _keep_visible(root: str, fd: int) -> None:
    """Binds the image back at its path when a volume mount now hides it."""
    try:
        if os.path.samestat(os.stat(root), os.fstat(fd)):
            return
    except OSError:
        pass
    try:
        os.makedirs(root, exist_ok=True)  # inside the volume that covers it
    except OSError as e:
        raise StartError(f"the image at {root} is hidden by a volume mounted over it, and no mount point can be "
                         f"made there ({e.strerror}): keep the pod runner's cache outside the pods' mount paths") from None
    mount(f"/proc/self/fd/{fd}", root, MS_BIND | MS_REC, f"binding the image back at {root}")
    mount(None, root, MS_REMOUNT | MS_BIND | MS_RDONLY, f"making the image at {root} read-only")


if __name__ == "__main__":
    main(sys.argv[1])
