"""The pure parts of reading from the watch cache and writing only on difference, and the work queue."""
from __future__ import annotations

import asyncio
import time

from mlflow_operator.controller import kube
from mlflow_operator.controller.workqueue import WorkQueue

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "team", "namespace": "ns", "labels": {"app.kubernetes.io/instance": "team"}},
    "spec": {"replicas": 1, "template": {"spec": {"containers": [
        {"name": "mlflow", "image": "img:1", "resources": {"limits": {"memory": "1024Mi"}}}]}}},
}


def live_from(desired: dict, **changes) -> dict:
    """What the API server gives back: the applied fields, defaults and status added, quantities canonical."""
    import copy

    live = copy.deepcopy(desired)
    live["metadata"]["uid"] = "u"
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    container = live["spec"]["template"]["spec"]["containers"][0]
    container.update(terminationMessagePath="/dev/termination-log", imagePullPolicy="IfNotPresent")
    container["resources"]["limits"]["memory"] = "1Gi"
    live["spec"]["strategy"] = {"type": "RollingUpdate"}
    live["status"] = {"replicas": 1}
    for path, value in changes.items():
        target = live
        *parents, leaf = path.split(".")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is None:
            del target[leaf]
        else:
            target[leaf] = value
    return live


def test_an_unchanged_child_is_not_applied_again():
    desired = kube.with_input_hash(DEPLOYMENT)
    assert kube.up_to_date(desired, live_from(desired))


def test_a_hand_edit_or_a_removed_field_is_put_back():
    desired = kube.with_input_hash(DEPLOYMENT)
    assert not kube.up_to_date(desired, live_from(desired, **{"spec.replicas": 3}))
    assert not kube.up_to_date(desired, live_from(desired, **{"spec.template.spec.containers.0.image": "other"}))
    assert not kube.up_to_date(desired, live_from(desired, **{"metadata.labels": {}}))
    assert not kube.up_to_date(desired, live_from(desired, **{"spec.template.spec.containers.0.resources": None}))


def test_a_new_manifest_is_applied_even_when_the_live_object_has_its_fields():
    """A field the spec no longer asks for is still live: only the hash tells it must go."""
    old = kube.with_input_hash({**DEPLOYMENT, "metadata": {**DEPLOYMENT["metadata"], "labels": {
        "app.kubernetes.io/instance": "team", "extra": "x"}}})
    new = kube.with_input_hash(DEPLOYMENT)
    assert kube.input_hash(old) != kube.input_hash(new)
    assert not kube.up_to_date(new, live_from(old))


def test_the_hash_ignores_itself():
    once = kube.with_input_hash(DEPLOYMENT)
    assert kube.with_input_hash(once) == once


def test_pass_view_answers_only_for_its_owner_and_equality_selectors():
    pod_owner = {"kind": "Job", "metadata": {"name": "m", "labels": {"app.kubernetes.io/instance": "team",
                                                                        "app.kubernetes.io/component": "migration"}}}
    view = kube.PassView("ns", "team", {"Job", "Deployment"}, [pod_owner])
    assert view.select("Job", "app.kubernetes.io/instance=team,app.kubernetes.io/component=migration") == [pod_owner]
    assert view.select("Job", "app.kubernetes.io/instance=team,app.kubernetes.io/component=server") == []
    assert view.select("Job", "app.kubernetes.io/instance=other") is None  # not this view's: ask the API
    assert view.select("Job", "app.kubernetes.io/instance!=team") is None
    assert view.get("Deployment", "ns", "team") is None and view.covers("Deployment", "ns")
    assert not view.covers("Secret", "ns") and not view.covers("Job", "elsewhere")


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = kube.TokenBucket(qps=50, burst=5)
    start = time.monotonic()
    for _ in range(10):
        bucket.wait()
    elapsed = time.monotonic() - start
    assert 0.08 <= elapsed < 0.5, elapsed  # 5 at once, 5 more at 50/s


def test_work_queue_runs_a_key_once_at_a_time_and_brings_it_forward():
    async def scenario():
        queue = WorkQueue()
        queue.add("a", 10)
        queue.add("a", 0)  # brought forward
        queue.add("b", 0.05)
        assert len(queue) == 2
        first = await asyncio.wait_for(queue.get(), 1)
        assert first == "a"
        queue.add("a", 0)  # during its pass: runs again after it, not beside it
        second = await asyncio.wait_for(queue.get(), 1)
        assert second == "b"
        queue.done("a", None)
        again = await asyncio.wait_for(queue.get(), 1)
        assert again == "a"
        queue.done("a", 0.05)
        queue.forget("a")
        try:
            await asyncio.wait_for(queue.get(), 0.2)
            raise AssertionError("a forgotten key came back")
        except asyncio.TimeoutError:
            pass

    asyncio.run(scenario())


def test_work_queue_takes_a_due_change_of_intent_before_due_observations():
    async def scenario():
        queue = WorkQueue()
        for i in range(5):
            queue.add(f"observe{i}", 0)
        queue.add("edited", 0.01, intent=True)  # due after the observations, taken before them
        queue.add("observe0", 0, intent=False)  # a later observation keeps its place
        queue.add("observe4", 0.5, intent=True)  # intent, at its earlier due time: first of the intents
        await asyncio.sleep(0.02)
        taken = [await asyncio.wait_for(queue.get(), 1) for _ in range(6)]
        assert taken == ["observe4", "edited", "observe0", "observe1", "observe2", "observe3"], taken
        assert len(queue) == 0

        # Intent added during a pass survives to the pass after it, and is not lost to an
        # observation added meanwhile.
        queue.add("x", 0)
        queue.add("busy", 0)
        assert await asyncio.wait_for(queue.get(), 1) == "x"
        assert await asyncio.wait_for(queue.get(), 1) == "busy"
        queue.add("busy", 0, intent=True)
        queue.add("busy", 0)
        queue.add("other", 0)
        queue.done("busy", None)
        queue.done("x", None)
        await asyncio.sleep(0.01)
        assert await asyncio.wait_for(queue.get(), 1) == "busy"
        assert await asyncio.wait_for(queue.get(), 1) == "other"

        # A forgotten key leaves nothing behind in either heap.
        queue.add("gone", 0, intent=True)
        queue.forget("gone")
        try:
            await asyncio.wait_for(queue.get(), 0.1)
            raise AssertionError("a forgotten key came back")
        except asyncio.TimeoutError:
            pass

    asyncio.run(scenario())


def test_work_queue_serves_waiting_workers_in_due_order_and_rearms_for_an_earlier_key():
    async def scenario():
        queue = WorkQueue()
        taken: list[tuple[str, float]] = []
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def worker():
            while True:
                key = await queue.get()
                taken.append((key, loop.time() - start))
                queue.done(key, None)

        workers = [asyncio.create_task(worker()) for _ in range(8)]
        await asyncio.sleep(0.01)  # every worker waits
        queue.add("late", 0.5)
        queue.add("early", 0.1)  # earlier than the timer the workers wait on: it must not wait for "late"
        for i in range(10):
            queue.add(f"k{i}", 0.2 + i * 0.01)
        await asyncio.sleep(0.8)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        keys = [k for k, _ in taken]
        assert keys == ["early", *[f"k{i}" for i in range(10)], "late"], keys
        times = dict(taken)
        assert 0.1 <= times["early"] < 0.2, times
        assert 0.5 <= times["late"] < 0.7, times
        assert not queue._waiters and queue._timer is None  # cancelled workers leave nothing armed

    asyncio.run(scenario())
