"""The validation corpus: specs that cannot work (with the field and the message the refusal
must give) and specs that must be accepted. Kept as data so that the unit tier (`render`) and the
cluster tier (the API server) read the same cases."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Case:
    name: str
    spec: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    field: str | None = None  # invalid cases: the field the refusal names
    message: str | None = None  # invalid cases: a fragment of the refusal's sentence

    def object(self, namespace: str = "ml") -> dict[str, Any]:
        name = re.sub(r"[^a-z0-9]+", "-", self.name)[:40].strip("-")
        return {
            "apiVersion": "mlflow-operator.dev/v1alpha1",
            "kind": "TrackingServer",
            "metadata": {"name": name, "namespace": namespace, **copy.deepcopy(self.metadata)},
            "spec": copy.deepcopy(self.spec),
        }

    def refusal_in(self, text: str) -> bool:
        """Whether `text` (render's or kubectl's error output) names the field with the message,
        on one line: `<field>: ... <message>`."""
        if self.field in self.message:  # the message names the field itself (unknown field "...")
            return self.message in text
        pattern = re.escape(self.field) + r": [^\n]*" + re.escape(self.message)
        return re.search(pattern, text) is not None


@dataclass(frozen=True)
class ClassCase(Case):
    """A TrackingServerClass (cluster-scoped): `namespace` only keeps names apart between runs."""

    def object(self, namespace: str = "ml") -> dict[str, Any]:
        name = re.sub(r"[^a-z0-9]+", "-", self.name)[:40].strip("-") + "-" + namespace
        return {
            "apiVersion": "mlflow-operator.dev/v1alpha1",
            "kind": "TrackingServerClass",
            "metadata": {"name": name, **copy.deepcopy(self.metadata)},
            "spec": copy.deepcopy(self.spec),
        }


def _load(filename: str, case: type[Case] = Case) -> list[Case]:
    cases = [case(**{"spec": {}, **raw}) for raw in yaml.safe_load((HERE / filename).read_text())]
    names = [c.name for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"{filename}: case names used twice: {duplicates}"
    return cases


INVALID = _load("invalid.yaml")
VALID = _load("valid.yaml")
CLASS_INVALID = _load("classes_invalid.yaml", ClassCase)
CLASS_VALID = _load("classes_valid.yaml", ClassCase)
