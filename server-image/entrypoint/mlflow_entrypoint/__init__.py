"""Entrypoint of the mlflow-operator server image.

Subcommands (``mlflow-entrypoint <subcommand>``), all configured by environment variables (the env
contract between the operator's pod spec and this image, see ``config.py``):

- ``serve``: checks the configuration and the database schema, then execs ``mlflow server``.
- ``migrate``: upgrades the tracking (and registry, and basic-auth) database under a database lock.
- ``wait-for-backend``: waits, bounded, until the backend database answers.
- ``check``: prints a JSON report (database reachable and migrated, artifact destination writable).
"""

__version__ = "0.1.0"
