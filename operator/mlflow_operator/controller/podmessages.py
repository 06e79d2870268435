"""What of a container's termination message may reach status and events.

The pods set `terminationMessagePolicy: FallbackToLogsOnError`, so a crashed container's message can
be the last lines of its log: MLflow's own tracebacks, which may hold a database URI, a query, a
key. Status and events are readable by anyone who may `get trackingservers`, so only the
entrypoint's own lines are kept ("mlflow-entrypoint serve: refusing to start: ..."): the entrypoint
redacts every line it prints. A URI password is masked once more, in case a line was not its.
"""
from __future__ import annotations

import re

ENTRYPOINT_PREFIX = "mlflow-entrypoint "
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?=@)")
MASK = "***"


def mask_uri_passwords(text: str) -> str:
    return _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def entrypoint_message(text: str | None) -> str:
    """The entrypoint's own lines of a termination message, or "" when it has none."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip().startswith(ENTRYPOINT_PREFIX)]
    return mask_uri_passwords("\n".join(lines))
