"""Watched objects reach Kopf without managedFields; everything else passes as it came."""
import asyncio

from kopf._cogs.clients import watching

from mlflow_operator.controller import slim_watch


def collect(gen_fn, **kwargs):
    async def run():
        return [event async for event in gen_fn(**kwargs)]
    return asyncio.run(run())


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

    events = collect(slim_watch.slimmed(stream), resource="pods")
    assert events[0] == {"type": None, "object": {
        "apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running"},
        "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"}}}}
    assert events[1] is bookmark
    assert events[2] == {"type": "ERROR", "object": {"code": 410}}


def test_install_wraps_the_function_kopfs_infinite_watch_calls_once():
    original = watching.continuous_watch
    try:
        assert slim_watch.install()
        wrapped = watching.continuous_watch
        assert wrapped.__slimmed__ is original
        assert slim_watch.install()
        assert watching.continuous_watch is wrapped  # not wrapped twice
        assert "continuous_watch" in watching.infinite_watch.__code__.co_names
    finally:
        watching.continuous_watch = original
