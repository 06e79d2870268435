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
