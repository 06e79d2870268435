"""A watched kind whose CRD is deleted ends its watch-stream, not the operator; watched objects
reach Kopf without managedFields, everything else as it came."""
import asyncio

import pytest
from kopf._cogs.clients import errors, watching

from mlflow_operator.controller import watch_streams


def collect(gen_fn, **kwargs):
    async def run():
        return [event async for event in gen_fn(**kwargs)]
    return asyncio.run(run())


def test_a_404_ends_the_stream_after_the_events_before_it():
    async def stream(**_):
        yield {"type": "ADDED"}
        raise errors.APINotFoundError({"message": "404 page not found"}, status=404, headers={})

    watch = watch_streams.wrapped(stream, errors.APINotFoundError, pause=0)
    assert collect(watch, resource="servicemonitors") == [{"type": "ADDED"}]


def test_other_errors_still_end_the_operator():
    async def stream(**_):
        yield {"type": "ADDED"}
        raise errors.APIForbiddenError({"message": "forbidden"}, status=403, headers={})

    watch = watch_streams.wrapped(stream, errors.APINotFoundError, pause=0)
    with pytest.raises(errors.APIForbiddenError):
        collect(watch)


def test_install_wraps_the_function_kopfs_infinite_watch_calls_once():
    original = watching.continuous_watch
    try:
        assert watch_streams.install()
        wrapped = watching.continuous_watch
        assert wrapped.__wrapped__ is getattr(original, "__wrapped__", original)
        assert watch_streams.install()
        assert watching.continuous_watch is wrapped  # not wrapped twice
        # infinite_watch looks continuous_watch up in its module at call time
        assert "continuous_watch" in watching.infinite_watch.__code__.co_names
    finally:
        watching.continuous_watch = original


def test_objects_lose_their_managed_fields_and_nothing_else():
    pod = {"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running"},
           "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"},
                        "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]}}
    bookmark = object()  # Kopf's listing bookmark is not a dict

    async def stream(**kwargs):
        assert kwargs == {"resource": "pods"}
        yield {"type": None, "object": pod}
        yield bookmark
        yield {"type": "ERROR", "object": {"code": 410}}

    events = collect(watch_streams.wrapped(stream, errors.APINotFoundError, pause=0), resource="pods")
    assert events[0] == {"type": None, "object": {
        "apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running"},
        "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"}}}}
    assert events[1] is bookmark
    assert events[2] == {"type": "ERROR", "object": {"code": 410}}


def test_a_cached_childs_object_reaches_kopf_as_its_identity_and_compact_text_emptied_in_place():
    from types import SimpleNamespace

    from mlflow_operator.controller import handlers, kube

    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "mlflow", "image": "x"}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
           "metadata": {"name": "p", "namespace": "team", "uid": "u1", "resourceVersion": "7",
                        "labels": {"app.kubernetes.io/instance": "t"}, "annotations": {"a": "b"},
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "r"}],
                        "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]}}
    expected_text = kube.compact(pod)
    listing = [pod]  # Kopf's listing holds the decoded items while it yields them
    pods = SimpleNamespace(group="", plural="pods")
    servers = SimpleNamespace(group="mlflow-operator.dev", plural="trackingservers")
    assert handlers.is_cached_child(pods) and not handlers.is_cached_child(servers)

    async def stream(**_):
        for item in listing:
            yield {"type": None, "object": item}
        yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "metadata": {}}}

    events = collect(watch_streams.wrapped(stream, errors.APINotFoundError, pause=0,
                                           compacted=handlers.is_cached_child), resource=pods)
    assert events[0]["object"] is listing[0]  # emptied in place: nothing else of it stays decoded
    assert listing[0] == {"apiVersion": "v1", "kind": "Pod", watch_streams.COMPACT_KEY: expected_text,
                          "metadata": {"name": "p", "namespace": "team", "uid": "u1", "resourceVersion": "7",
                                       "labels": {"app.kubernetes.io/instance": "t"}}}
    assert "managedFields" not in expected_text and '"phase":"Running"' in expected_text
    assert events[1] == {"type": "ERROR", "object": {"kind": "Status", "code": 410, "metadata": {}}}

    # A kind that is not cached (the TrackingServers) only loses its managedFields.
    server = {"kind": "TrackingServer", "spec": {}, "metadata": {"name": "t", "managedFields": [{}]}}

    async def servers_stream(**_):
        yield {"type": "MODIFIED", "object": server}

    [event] = collect(watch_streams.wrapped(servers_stream, errors.APINotFoundError, pause=0,
                                            compacted=handlers.is_cached_child), resource=servers)
    assert event["object"] == {"kind": "TrackingServer", "spec": {}, "metadata": {"name": "t"}}


def test_the_watch_cache_keeps_the_same_entry_for_a_slimmed_child_as_for_the_whole_object():
    import copy

    import kopf

    from mlflow_operator.controller import handlers

    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 2},
                  "status": {"readyReplicas": 2},
                  "metadata": {"name": "t-mlflow", "namespace": "team", "resourceVersion": "9",
                               "labels": {"app.kubernetes.io/instance": "t"}, "managedFields": [{}]}}
    whole = handlers.cache_entry("Deployment", kopf.Body(copy.deepcopy(deployment)))
    slimmed = handlers.cache_entry("Deployment", kopf.Body(watch_streams.slim(copy.deepcopy(deployment))))
    assert slimmed == whole and list(whole) == [("team", "t")]
    [child] = whole.values()
    assert child.identity == ("Deployment", "t-mlflow", "9") and '"readyReplicas":2' in child.text
    # A ClusterRoleBinding is indexed under its TrackingServer's namespace label.
    crb = {"kind": "ClusterRoleBinding", "metadata": {"name": "b", "labels": {
        "app.kubernetes.io/instance": "t", handlers.OWNER_NAMESPACE_LABEL: "team"}}}
    assert list(handlers.cache_entry("ClusterRoleBinding", kopf.Body(watch_streams.slim(crb)))) == [("team", "t")]
    assert handlers.cache_entry("Pod", kopf.Body({"metadata": {"name": "other", "labels": {}}})) == {}
