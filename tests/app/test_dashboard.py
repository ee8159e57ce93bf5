"""dashboard: runs found under directories, their comparison table, and VisualDL over all."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from dashboard_server import dashboard_command, free_port, get_json, kill_all, serving_dashboard, visualdl_processes
from visualdl import LogWriter

from slim_callbacks import SlimError
from slim_callbacks.app.cli import main
from slim_callbacks.app.dashboard import check_port, comparison_table, find_runs, serve, visualdl_command


def summary(acc, macs, wall=3.0):
    return {"recipe": "r", "flops_reduction": 1 - macs / 2e8, "wall_time_s": wall,
            "before": {"acc": 0.9, "macs": 2e8, "params": 100, "size_mb": 1.0},
            "after": {"acc": acc, "macs": macs, "params": 60, "size_mb": 0.6}}


def write_run(root, name, acc=None, macs=1e8, records=("logs",)):
    run = root / name
    run.mkdir(parents=True)
    if acc is not None:
        (run / "summary.json").write_text(json.dumps(summary(acc, macs)))
    for sub in records:
        with LogWriter(logdir=str(run / sub)) as writer:
            for step in range(3):
                writer.add_scalar("eval/acc_top1", value=(acc or 0.5) + step / 100, step=step)
    return run


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "output"
    write_run(root, "uniform", acc=0.81, macs=1e8, records=("logs", "logs/sensitivity"))
    write_run(root, "slim", acc=0.79, macs=0.9e8)
    write_run(root, "script_run")  # a VisualDLLogger in a script: records, no summary
    (root / "notes").mkdir()
    (root / "notes" / "summary.json").write_text("{\"other\": 1}")  # not a run summary
    return root


def test_runs_are_summaries_with_their_record_dirs_plus_loose_record_dirs(runs_root):
    runs = {run.name: run for run in find_runs([str(runs_root)])}
    assert sorted(runs) == ["script_run/logs", "slim", "uniform"]
    assert [os.path.relpath(d, runs_root) for d in runs["uniform"].record_dirs] == [
        "uniform/logs", os.path.join("uniform", "logs", "sensitivity")]
    assert runs["slim"].summary["after"]["acc"] == 0.79
    assert runs["script_run/logs"].summary is None


def test_comparison_table_lines_up_the_summaries(runs_root):
    table = comparison_table(find_runs([str(runs_root)])).splitlines()
    assert table[0] == ("| run | top-1 before | top-1 after | MACs -% | GMACs | params | MB | "
                        "ms 1 thread | speedup | latency -% predicted | latency -% measured | "
                        "time s |")
    assert table[2:] == ["| slim | 0.9000 | 0.7900 | 55.00 | 0.0900 | 60 | 0.60 |  |  |  |  | 3.0 |",
                         "| uniform | 0.9000 | 0.8100 | 50.00 | 0.1000 | 60 | 0.60 |  |  |  |  | 3.0 |"]


def test_comparison_table_shows_the_pruned_latency_and_its_speedup(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    data = summary(0.8, 1e8)
    data["latency"] = {"1_thread": {"threads": 1, "before_ms": 3.0, "after_ms": 1.5,
                                    "speedup": 2.0},
                       "all_cores": {"threads": 2, "before_ms": 2.0, "after_ms": 1.6,
                                     "speedup": 1.25}}
    (run / "summary.json").write_text(json.dumps(data))
    rows = comparison_table(find_runs([str(tmp_path)])).splitlines()[2:]
    assert rows == ["| a | 0.9000 | 0.8000 | 50.00 | 0.1000 | 60 | 0.60 | 1.500 | 2.00 |  |  | 3.0 |"]
    data["latency"] = {"1_thread": {"after_ms": "fast"}}   # malformed: blank, not a crash
    (run / "summary.json").write_text(json.dumps(data))
    rows = comparison_table(find_runs([str(tmp_path)])).splitlines()[2:]
    assert rows == ["| a | 0.9000 | 0.8000 | 50.00 | 0.1000 | 60 | 0.60 |  |  |  |  | 3.0 |"]


def test_comparison_table_shows_the_latency_strategys_predicted_vs_measured(tmp_path):
    run = tmp_path / "lat"
    run.mkdir()
    data = summary(0.8, 1e8)
    data["latency"] = {"1_thread": {"threads": 1, "before_ms": 3.0, "after_ms": 1.55,
                                    "speedup": 3.0 / 1.55}}
    data["latency_strategy"] = {"target_reduction": 0.5, "threads": 1, "base_ms": 3.1,
                                "predicted_ms": 1.55, "predicted_reduction": 0.5,
                                "source": "timed during the search", "measured_reduction": 0.4833}
    (run / "summary.json").write_text(json.dumps(data))
    rows = comparison_table(find_runs([str(tmp_path)])).splitlines()[2:]
    assert rows == ["| lat | 0.9000 | 0.8000 | 50.00 | 0.1000 | 60 | 0.60 | 1.550 | 1.94 | 50.0 | "
                    "48.3 | 3.0 |"]
    data["latency_strategy"]["measured_reduction"] = None   # latency not measured: blank
    (run / "summary.json").write_text(json.dumps(data))
    rows = comparison_table(find_runs([str(tmp_path)])).splitlines()[2:]
    assert rows[0].endswith("| 50.0 |  | 3.0 |")


def test_no_runs_and_no_records_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SlimError, match="no runs under .*slim-callbacks run RECIPE"):
        serve([str(tmp_path)])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps(summary(0.5, 1e8)))
    assert serve([str(tmp_path)], serve_board=False) == 0
    assert "| a | 0.9000 | 0.5000 |" in capsys.readouterr().out
    with pytest.raises(SlimError, match="no VisualDL records under"):
        serve([str(tmp_path)])


def test_cli_no_serve_prints_the_table(runs_root, capsys):
    assert main(["dashboard", str(runs_root), "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert "| uniform | 0.9000 | 0.8100 |" in out and "3 runs, 3 with VisualDL records" in out


def test_a_corrupt_summary_is_skipped_with_a_warning_naming_it(runs_root, caplog):
    broken = runs_root / "broken" / "summary.json"
    broken.parent.mkdir()
    broken.write_text('{"before": {"acc": 0.9}, "aft')  # cut short, e.g. by a full disk
    with caplog.at_level("WARNING", logger="slim_callbacks.app.dashboard"):
        names = [run.name for run in find_runs([str(runs_root)])]
    assert "broken" not in names and "uniform" in names
    warnings = [r.getMessage() for r in caplog.records if str(broken) in r.getMessage()]
    assert len(warnings) == 1 and "skipped, not readable as JSON" in warnings[0]


@pytest.mark.parametrize("content, problem", [
    ([1, 2], "expected a mapping with 'before' and 'after', got a list"),
    ({"before": [0.9], "after": {}}, "'before' is a list, expected a mapping"),
    ({"before": {}, "after": "0.8"}, "'after' is a str, expected a mapping"),
    ({"other": 1}, "no 'before' key (a run summary has 'before' and 'after')"),
])
def test_a_summary_of_the_wrong_shape_is_skipped_with_a_warning(tmp_path, caplog, content, problem):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text(json.dumps(content))
    with caplog.at_level("WARNING", logger="slim_callbacks.app.dashboard"):
        assert find_runs([str(tmp_path)]) == []
    assert caplog.messages == [f"{tmp_path / 'bad' / 'summary.json'}: skipped, {problem}"]


def test_values_of_the_wrong_type_leave_their_cells_blank_with_a_warning(tmp_path, capsys):
    bad = summary(0.8, 1e8)
    bad["after"].update(macs="100M", params=[60])
    bad["wall_time_s"] = None
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "summary.json").write_text(json.dumps(bad))
    assert main(["dashboard", str(tmp_path), "--no-serve"]) == 0
    out, err = capsys.readouterr()
    assert "| typo | 0.9000 | 0.8000 | 50.00 |  |  | 0.60 |  |" in out
    path = tmp_path / "typo" / "summary.json"
    assert err.splitlines() == [
        f"WARNING slim_callbacks.app.dashboard: {path}: wall_time_s is None, not a number; "
        f"its cell is left blank",
        f"WARNING slim_callbacks.app.dashboard: {path}: after.macs is '100M', not a number; "
        f"its cell is left blank",
        f"WARNING slim_callbacks.app.dashboard: {path}: after.params is [60], not a number; "
        f"its cell is left blank"]


def test_visualdl_command_is_offline_friendly():
    command = visualdl_command(["output"], "127.0.0.1", 8040)
    assert command[0] == sys.executable
    assert command[1] == "-c" and command[3:] == ["--logdir", "output", "--host", "127.0.0.1", "--port", "8040",
                           "--language", "en", "--disable-telemetry"]


def test_dashboard_serves_every_run_in_one_visualdl_and_stops_on_ctrl_c(runs_root):
    port = free_port()
    with serving_dashboard(runs_root, port) as (proc, server):
        base = f"http://127.0.0.1:{port}/app/api"
        root = str(runs_root)
        assert sorted(get_json(f"{base}/runs")) == sorted(os.path.join(root, p) for p in (
            "uniform/logs", "uniform/logs/sensitivity", "slim/logs", "script_run/logs"))
        points = get_json(f"{base}/scalar/list?run={root}/slim/logs&tag=eval/acc_top1")
        assert [round(p[2], 4) for p in points] == [0.79, 0.8, 0.81]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not os.path.exists(f"/proc/{server}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_visualdl_too(runs_root, signum):
    port = free_port()
    with serving_dashboard(runs_root, port) as (proc, server):
        proc.send_signal(signum)  # the command only, as `kill PID` or a closing terminal
        assert proc.wait(timeout=30) == 0
        assert not os.path.exists(f"/proc/{server}") and visualdl_processes(port) == []


@pytest.fixture
def taken_port():
    """A port bound (not listening) by another program: the test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def run_dashboard(command, port):
    """Runs a dashboard command that must end by itself; returns (status, stderr lines)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=60)
        assert visualdl_processes(port) == []
        return proc.returncode, err.decode(errors="replace").splitlines()
    finally:
        kill_all(proc, visualdl_processes(port))


def test_a_port_in_use_is_a_one_line_error_and_visualdl_never_starts(runs_root, taken_port):
    status, err = run_dashboard(dashboard_command(runs_root, taken_port), taken_port)
    assert status == 2
    assert err[-1] == (f"slim-callbacks: error: --port: cannot listen on 127.0.0.1:{taken_port} "
                       f"(Address already in use); choose another port with --port N")
    assert not any("VisualDL" in line for line in err)


def test_visualdl_failing_to_bind_after_the_check_ends_the_command(runs_root, taken_port):
    # the port taken between our check and VisualDL's bind: skip the check
    skip_check = ("import sys; import slim_callbacks.app.dashboard as d; "
                  "d.check_port = lambda host, port: None; "
                  "from slim_callbacks.app.cli import main; sys.exit(main(sys.argv[1:]))")
    command = [sys.executable, "-c", skip_check, *dashboard_command(runs_root, taken_port)[3:]]
    status, err = run_dashboard(command, taken_port)
    assert status == 2 and "Address already in use" in err
    assert err[-1] == "slim-callbacks: error: VisualDL exited with status 1 (its message is above)"


def test_check_port(taken_port):
    with pytest.raises(SlimError, match=rf"^--port: cannot listen on 127.0.0.1:{taken_port} "):
        check_port("127.0.0.1", taken_port)
    with pytest.raises(SlimError, match=r"^--host: cannot listen on no.such.host.invalid:"):
        check_port("no.such.host.invalid", 8040)
    # a connection of a stopped server lingering in TIME_WAIT does not count as in use
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            listener.accept()[0].close()  # the server side closes first: TIME_WAIT
            client.recv(1)
    check_port("127.0.0.1", port)


def test_docstring_examples_run():
    import doctest

    from slim_callbacks.app import dashboard
    assert doctest.testmod(dashboard).failed == 0


def test_a_directory_with_several_record_files_is_warned_about(tmp_path, caplog):
    logs = tmp_path / "old_run" / "logs"  # the layout before each writer had a directory
    for name in ("vdlrecords.1700000000.log", "vdlrecords.1700000099.log"):
        with LogWriter(logdir=str(logs), file_name=name) as writer:
            writer.add_scalar("eval/acc", value=0.5, step=0)
    with caplog.at_level("WARNING", logger="slim_callbacks.app.dashboard"):
        runs = find_runs([str(tmp_path)])
    assert [run.record_dirs for run in runs] == [[str(logs)]]
    assert caplog.messages == [
        f"{logs}: VisualDL shows only vdlrecords.1700000099.log, the newest of its 2 record "
        f"files; the others (['vdlrecords.1700000000.log']) are hidden: move each into a "
        f"directory of its own to see it"]
