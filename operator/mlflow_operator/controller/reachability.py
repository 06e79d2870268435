"""What the operator can tell of a database URI without connecting to it.

Reachability itself is observed where the pods run (stores.py): the operator never connects to a
team's database or object store.
"""
from __future__ import annotations

from urllib.parse import urlsplit

# The dialects the server image has drivers for (psycopg2, PyMySQL; MariaDB speaks mysql://).
SUPPORTED_DATABASES = ("postgresql", "postgres", "mysql")


def unsupported_database(uri: str) -> str | None:
    """Why the server image cannot use this database URI, or None when it can."""
    dialect = urlsplit(uri).scheme.split("+", 1)[0].lower()
    if dialect in SUPPORTED_DATABASES:
        return None
    return (f"{dialect or 'a URI without scheme'}:// is not a database the server image supports: "
            f"use postgresql:// or mysql:// (MariaDB too)")
