"""The operator's sentence for a child the API server refuses: the child's kind and name, each
field with the API server's own message (from the Status' causes), or its message when there are
no causes."""
from __future__ import annotations

import json

from mlflow_operator.controller.kube import ApiException
from mlflow_operator.controller.kube import ChildRejected

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "team", "namespace": "ml"}}


def refused(body: dict) -> ApiException:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = json.dumps(body)
    return exc


def test_names_the_child_and_each_field():
    exc = refused({
        "kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
        "message": 'Deployment.apps "team" is invalid: spec.template.annotations: Too long: may not be more than 262144 bytes',
        "details": {"name": "team", "kind": "Deployment", "causes": [
            {"reason": "FieldValueTooLong", "message": "Too long: may not be more than 262144 bytes",
             "field": "spec.template.annotations"},
        ]},
    })
    rejected = ChildRejected(DEPLOYMENT, exc)
    assert str(rejected) == ("Deployment team was refused by the API server: "
                             "spec.template.annotations: Too long: may not be more than 262144 bytes")
    assert rejected.causes == [("spec.template.annotations", "Too long: may not be more than 262144 bytes")]


def test_without_causes_the_api_servers_message_is_kept():
    exc = refused({"kind": "Status", "code": 422, "message": "admission webhook said no"})
    assert str(ChildRejected(DEPLOYMENT, exc)) == "Deployment team was refused by the API server: admission webhook said no"
