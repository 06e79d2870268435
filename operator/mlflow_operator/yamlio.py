"""YAML output that Kubernetes tools read back exactly.

PyYAML writes YAML 1.1 but leaves `y`, `n` (and their capitals) unquoted, which kubectl's YAML
reader (sigs.k8s.io/yaml) takes for booleans: an env value or Secret key "y" would reach the API
server as `true`. Those strings are always quoted here.
"""
from __future__ import annotations

from typing import Any, Iterable

import yaml

_AMBIGUOUS = {"y", "Y", "n", "N"}


class KubernetesDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if value in _AMBIGUOUS:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


KubernetesDumper.add_representer(str, _represent_str)


def dump(document: Any, **options: Any) -> str:
    return yaml.dump(document, Dumper=KubernetesDumper, **options)


def dump_all(documents: Iterable[Any], **options: Any) -> str:
    return yaml.dump_all(documents, Dumper=KubernetesDumper, **options)
