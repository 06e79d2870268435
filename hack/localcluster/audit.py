"""The API server's audit log: what service accounts asked for, request by request.

The local control plane writes one JSON line per finished request (stage ResponseComplete; a
watch counts when it ends) made by a ServiceAccount outside kube-system (the controllers' own are
left out), at level Metadata: who, which verb, which resource, the answer's code, never a body.
Tests count an operator's requests with it (no writes when nothing changed), and compare the verbs
it used with what its RBAC grants.
"""
from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list"})


@dataclass(frozen=True)
class Request:
    time: dt.datetime  # when the API server received it
    user: str
    verb: str
    api_group: str
    resource: str  # with its subresource: "trackingservers/status"
    namespace: str
    name: str
    code: int
    authorized: bool = True  # the authorizer's decision (a 403 can also be admission's, e.g. a terminating namespace)

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


def _time(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def requests(path: Path, user: str | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None) -> Iterator[Request]:
    """The logged requests of `user` (all users when None) received in [since, until)."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as log:
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written
            who = (event.get("user") or {}).get("username", "")
            if user is not None and who != user:
                continue
            when = _time(event["requestReceivedTimestamp"])
            if (since and when < since) or (until and when >= until):
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            yield Request(when, who, event.get("verb", ""), ref.get("apiGroup", ""), resource,
                          ref.get("namespace", ""), ref.get("name", ""),
                          (event.get("responseStatus") or {}).get("code", 0),
                          (event.get("annotations") or {}).get("authorization.k8s.io/decision") != "forbid")


def count_by_verb(path: Path, user: str | None = None, since: dt.datetime | None = None,
                  until: dt.datetime | None = None) -> Counter:
    return Counter(r.verb for r in requests(path, user, since, until))


def now() -> dt.datetime:
    """A timestamp comparable with the log's (the API server runs on this machine's clock)."""
    return dt.datetime.now(dt.timezone.utc)
