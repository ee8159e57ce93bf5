"""run_forked(): every result reaches the parent, failures stop the run with the worker's error."""
import os

import pytest

from slim_callbacks import SlimError
from slim_callbacks.analysis.workers import RemoteTraceback, fork_available, run_forked

pytestmark = pytest.mark.skipif(not fork_available(), reason="needs os.fork")


def collect(tasks, work, workers):
    got = []
    run_forked(tasks, work, workers, lambda task, result: got.append((task, result)))
    return got


def powers(n):
    for k in range(n):
        yield (os.getpid(), k, n ** k)


def test_every_result_arrives_once_and_work_is_spread_over_processes():
    tasks = [3, 5, 2, 4, 1, 6]
    got = collect(tasks, powers, workers=2)
    assert sorted((task, k, value) for task, (_, k, value) in got) == sorted(
        (n, k, n ** k) for n in tasks for k in range(n))
    pids = {pid for _, (pid, _, _) in got}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_results_of_one_task_arrive_in_the_order_it_yields_them():
    got = collect([4, 3], powers, workers=2)
    for task in (4, 3):
        assert [k for t, (_, k, _) in got if t == task] == list(range(task))


def test_a_worker_changes_nothing_in_the_parent():
    state = {"value": 1}

    def mutate(n):
        state["value"] = n
        yield state["value"]
    assert sorted(r for _, r in collect([7, 8], mutate, workers=2)) == [7, 8]
    assert state == {"value": 1}


class Boom(Exception):
    pass


def failing(n):
    yield n
    if n == 2:
        raise Boom(f"task {n} failed")


def test_the_worker_exception_is_raised_with_its_traceback_as_cause():
    with pytest.raises(Boom, match="task 2 failed") as info:
        collect([1, 2, 3], failing, workers=2)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in failing" in str(info.value.__cause__)


def test_an_unpicklable_exception_arrives_as_slim_error_with_its_message():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def work(n):
        raise Local(f"local failure {n}")
        yield
    with pytest.raises(SlimError, match="failed on task 5: .*local failure 5"):
        collect([5], work, workers=1)


def test_a_worker_that_dies_is_reported_not_waited_for():
    def die(n):
        yield n
        os._exit(3)
    with pytest.raises(SlimError, match="stopped without a result \\(exit code 3\\)"):
        collect([1, 2], die, workers=2)


def test_a_failing_result_handler_stops_the_workers():
    def slow(n):
        for k in range(n):
            yield k

    def handler(task, result):
        raise KeyError("handler failed")
    with pytest.raises(KeyError, match="handler failed"):
        run_forked([10000, 10000], slow, 2, handler)


def test_docstring_examples_run():
    import doctest

    from slim_callbacks.analysis import workers
    result = doctest.testmod(workers)
    assert result.attempted > 0 and result.failed == 0
