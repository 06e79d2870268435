"""Ownership and retention decisions (pure): what the operator may delete, and the metadata a
data-bearing child needs under each retention policy."""
from mlflow_operator.api import load_trackingserver
from mlflow_operator.controller.ownership import owned_by, retention_metadata

from .helpers import make

UID = "11111111-2222-3333-4444-555555555555"
MANAGED = {"app.kubernetes.io/managed-by": "mlflow-operator", "app.kubernetes.io/instance": "team"}


def _ts(retention: str):
    return load_trackingserver(make({"retentionPolicy": retention}, uid=UID))


def _ref(uid: str, name: str = "team") -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer", "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def _obj(refs, labels=MANAGED, annotation=None):
    meta = {"name": "team-data", "resourceVersion": "7", "labels": dict(labels), "ownerReferences": refs}
    if annotation:
        meta["annotations"] = {"mlflow-operator.dev/retention-policy": annotation}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta}


def test_retain_drops_every_reference_to_a_trackingserver_of_that_name_and_keeps_others():
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u2"}
    patch = retention_metadata(_ts("Retain"), _obj([_ref(UID), _ref("old-uid"), other], annotation="Delete"))
    assert patch == {"resourceVersion": "7", "ownerReferences": [other],
                     "annotations": {"mlflow-operator.dev/retention-policy": "Retain"}}


def test_delete_owns_the_data_and_nothing_changes_once_it_does():
    patch = retention_metadata(_ts("Delete"), _obj([], annotation="Retain"))
    assert [r["uid"] for r in patch["ownerReferences"]] == [UID]
    settled = _obj(patch["ownerReferences"], annotation="Delete")
    assert retention_metadata(_ts("Delete"), settled) is None
    assert retention_metadata(_ts("Retain"), _obj([], annotation="Retain")) is None


def test_only_managed_objects_owned_by_this_uid_are_ours():
    ts = _ts("Retain")
    assert owned_by(ts, _obj([_ref(UID)]))
    assert not owned_by(ts, _obj([_ref("someone-else")]))
    helm = {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "team"}
    assert not owned_by(ts, _obj([_ref(UID)], labels=helm)), "a managed-by label of another tool is not ours"
    assert not owned_by(ts, _obj([]))
