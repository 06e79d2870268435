"""Reconciliation: the Kopf handlers and the steps they run.

The renderer (``mlflow_operator.render``) says what the children should be; this package applies them with
server-side apply, gates rollouts on migrations, and reports what it observes in status. Nothing here
remembers state between passes: every pass reads the children and computes status from them.
"""
