"""Entrypoint of the mlflow-operator server image.

Subcommands (``mlflow-entrypoint <subcommand>``), all configured by environment variables (the env
contract between the operator's pod spec and this image, see ``config.py``):

- ``serve``: checks the configuration and the database schema, then execs ``mlflow server``.
- ``migrate``: upgrades the tracking (and registry, and basic-auth) database under a database lock.
- ``wait-for-backend``: waits, bounded, until the backend database answers.
- ``check``: prints a JSON report (database reachable and migrated, artifact destination writable);
  ``check --init`` is the pods' init container: every store from where the pod runs, bounded retries,
  the result and the MLflow version in the termination message (``stores.py``), read by the operator.

The server's readiness probe is ``/readyz`` (``ready.py``): a query on the tracking database.
"""

__version__ = "0.1.0"
