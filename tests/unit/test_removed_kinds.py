"""A watched kind whose CRD is deleted ends its watch-stream, not the operator."""
import asyncio

import pytest
from kopf._cogs.clients import errors, watching

from mlflow_operator.controller import removed_kinds


def collect(gen_fn, **kwargs):
    async def run():
        return [event async for event in gen_fn(**kwargs)]
    return asyncio.run(run())


def test_a_404_ends_the_stream_after_the_events_before_it():
    async def stream(**_):
        yield {"type": "ADDED"}
        raise errors.APINotFoundError({"message": "404 page not found"}, status=404, headers={})

    watch = removed_kinds.surviving(stream, errors.APINotFoundError, pause=0)
    assert collect(watch, resource="servicemonitors") == [{"type": "ADDED"}]


def test_other_errors_still_end_the_operator():
    async def stream(**_):
        yield {"type": "ADDED"}
        raise errors.APIForbiddenError({"message": "forbidden"}, status=403, headers={})

    watch = removed_kinds.surviving(stream, errors.APINotFoundError, pause=0)
    with pytest.raises(errors.APIForbiddenError):
        collect(watch)


def test_install_wraps_the_function_kopfs_infinite_watch_calls_once():
    original = watching.continuous_watch
    try:
        assert removed_kinds.install()
        wrapped = watching.continuous_watch
        assert wrapped.__wrapped__ is getattr(original, "__wrapped__", original)
        assert removed_kinds.install()
        assert watching.continuous_watch is wrapped  # not wrapped twice
        # infinite_watch looks continuous_watch up in its module at call time
        assert "continuous_watch" in watching.infinite_watch.__code__.co_names
    finally:
        watching.continuous_watch = original
