"""Kubernetes' `$(VAR)` expansion, as the kubelet applies it to env values, command and args.

A port of k8s.io/kubernetes/third_party/forked/golang/expansion: `$(NAME)` is replaced by the
variable's value when it is defined and left as written when it is not; `$$` is an escaped `$`;
any other `$` (or an unterminated `$(`) is kept literally.
"""
from __future__ import annotations

from typing import Callable, Mapping


def mapping_for(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """The first context that defines a name wins; undefined names stay `$(NAME)`."""

    def lookup(name: str) -> str:
        for ctx in contexts:
            if name in ctx:
                return ctx[name]
        return f"$({name})"

    return lookup


def _read_name(rest: str) -> tuple[str, bool, int]:
    """(text, is_variable, bytes consumed after the `$`)."""
    if rest[0] == "$":
        return "$", False, 1
    if rest[0] == "(":
        end = rest.find(")", 1)
        if end != -1:
            return rest[1:end], True, end + 1
        return "$(", False, 1
    return "$" + rest[0], False, 1


def expand(text: str, mapping: Callable[[str], str]) -> str:
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_name(text[cursor + 1:])
            out.append(mapping(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]
