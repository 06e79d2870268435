"""The workload tier runs the server image's entrypoint from its virtualenv (hack/testservices'
pytest plugin: `server_venv`, `client_venv`, `postgres`, `mysql`, `s3`, ...) against real stores, as
processes on loopback. What several of its tests and the node tier share is in server_env.py.

The kubelet stand-in that once ran the end-to-end tier here (podrunner/, with an NGINX translator of
Ingress objects) is gone: every end-to-end test runs on the real node (tests/node/).
"""
