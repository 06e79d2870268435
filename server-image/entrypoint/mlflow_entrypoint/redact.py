"""One redaction helper for every line the entrypoint prints: passwords never reach a log.

Two mechanisms, both applied by :func:`redact`:
- any ``scheme://user:password@host`` in a text loses its password (also for URIs we never saw);
- every secret value registered with :func:`register_secret` (database passwords, the admin
  password, the Flask secret key, storage keys) is replaced wherever it appears.
"""
from __future__ import annotations

import logging
import re
from urllib.parse import unquote

MASK = "***"
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?=@)")
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked everywhere from now on."""
    if value and len(value) >= 3:
        _secrets.add(value)
        # The URL-decoded and URL-encoded spellings may both appear in messages.
        _secrets.add(unquote(value))


def register_uri(uri: str | None) -> None:
    """Register the password of a URI (``scheme://user:password@host/...``) as a secret."""
    if not uri:
        return
    m = _URI_PASSWORD.search(uri)
    if m:
        register_secret(m.group("pw"))


def redact(text: object) -> str:
    s = str(text)
    s = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, s)
    for secret in sorted(_secrets, key=len, reverse=True):
        s = s.replace(secret, MASK)
    return s


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(level: int = logging.INFO) -> None:
    """Route every log record (ours, SQLAlchemy's, alembic's, MLflow's) through :func:`redact`."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s mlflow-entrypoint: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # alembic and MLflow configure their own handlers on import; ours must be the only output.
    for name in ("alembic", "mlflow", "sqlalchemy"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
