"""What of a container's termination message may reach status and events.

The pods set `terminationMessagePolicy: FallbackToLogsOnError`, so a crashed container's message can
be the last lines of its log: MLflow's own tracebacks, which may hold a database URI, a query, a
key. Status and events are readable by anyone who may `get trackingservers`, so only the
entrypoint's own lines are kept ("mlflow-entrypoint serve: refusing to start: ..."): the entrypoint
redacts every line it prints. A URI password is masked once more, in case a line was not its.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..render.naming import CHECK_CONTAINER

ENTRYPOINT_PREFIX = "mlflow-entrypoint "
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?=@)")
MASK = "***"


def mask_uri_passwords(text: str) -> str:
    return _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def entrypoint_message(text: str | None) -> str:
    """The entrypoint's own lines of a termination message, or "" when it has none."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip().startswith(ENTRYPOINT_PREFIX)
             and not line.strip().startswith(CHECK_REPORT_PREFIX)]  # the check's JSON is for stores.py
    return mask_uri_passwords("\n".join(lines))


# ---- the `check` init container's result ---------------------------------------------------------

CHECK_SUMMARY_PREFIX = "mlflow-entrypoint check: "
CHECK_REPORT_PREFIX = "mlflow-entrypoint check-report: "
_TEXT_LIMIT = 400


def _text(value, limit: int = _TEXT_LIMIT) -> str:
    text = mask_uri_passwords(str(value or ""))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _store_entry(raw) -> dict | None:
    """The fields of one store's result that may reach status, each a short masked text."""
    if not isinstance(raw, dict):
        return None
    return {"reachable": raw.get("reachable") is True, "reason": _text(raw.get("reason"), 64) or "Unknown",
            "message": _text(raw.get("message")), "kind": _text(raw.get("kind"), 16)}


def parse_check_report(text: str | None) -> dict | None:
    """The check's JSON line of a termination message, reduced to what status may carry; None when
    there is none (an image without it, kwok's pods, a check that crashed before reporting)."""
    for line in (text or "").splitlines():
        if not line.startswith(CHECK_REPORT_PREFIX):
            continue
        try:
            raw = json.loads(line[len(CHECK_REPORT_PREFIX):])
        except ValueError:
            return None
        if not isinstance(raw, dict):
            return None
        version = raw.get("mlflowVersion")
        return {
            "mlflowVersion": version if isinstance(version, str) and _VERSION.fullmatch(version) else None,
            "databases": [e for e in map(_store_entry, raw.get("databases") or []) if e],
            "artifacts": _store_entry(raw.get("artifacts")),
        }
    return None


_VERSION = re.compile(r"[0-9A-Za-z.+\-]{1,64}")


@dataclass(frozen=True)
class CheckResult:
    """What a pod's `check` init container last said."""

    pod: str
    passed: bool  # exited 0: every store it checks answered
    report: dict | None
    summary: str  # the entrypoint's own summary line, or why there is none
    running: bool = False  # a retry is running (the result is the previous attempt's)


def check_result(pod: dict) -> CheckResult | None:
    """The newest finished run of the pod's check container; None before it ever finished."""
    name = pod["metadata"]["name"]
    for cs in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if cs.get("name") != CHECK_CONTAINER:
            continue
        state = cs.get("state") or {}
        terminated = state.get("terminated")
        running = terminated is None
        terminated = terminated or (cs.get("lastState") or {}).get("terminated")
        if not terminated:
            return None
        message = terminated.get("message") or ""
        summary = next((line[len(CHECK_SUMMARY_PREFIX):] for line in message.splitlines()
                        if line.startswith(CHECK_SUMMARY_PREFIX)), "")
        if not summary:
            summary = entrypoint_message(message) or f"exit code {terminated.get('exitCode')}"
        return CheckResult(name, terminated.get("exitCode") == 0, parse_check_report(message), _text(summary),
                           running=running and terminated.get("exitCode") != 0)
    return None
