"""The real ``slim-callbacks dashboard`` serving VisualDL in the tests: start it on a
free loopback port, wait until VisualDL answers, query its HTTP API, stop everything."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]


def dashboard_command(root, port):
    return [sys.executable, "-m", "slim_callbacks", "dashboard", str(root), "--port", str(port)]


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def visualdl_processes(port):
    """PIDs of the VisualDL servers on ``port`` (whoever their parent is now)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:  # not a process, or it just ended
            continue
        if any(b"visualdl.server" in arg for arg in argv) and str(port).encode() in argv:
            found.append(int(entry))
    return found


def kill_all(proc, pids=()):
    """Kills ``proc``'s session and ``pids``: nothing stays behind if a test fails."""
    for kill, pid in [(os.killpg, proc.pid)] + [(os.kill, pid) for pid in pids]:
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _default_hangup():
    """As in a terminal: SIGHUP not ignored (under ``nohup`` the command rightly keeps
    ignoring it, and the SIGHUP test would wait in vain)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def serving_dashboard(root, port, cwd=None):
    """The real ``slim-callbacks dashboard`` (its own session; in ``cwd``, this
    checkout's package still imported), once VisualDL answers: yields the command's
    process and VisualDL's PID."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(dashboard_command(root, port), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_hangup, cwd=cwd, env=env)
    server = []
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                get_json(f"http://127.0.0.1:{port}/app/api/runs")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(proc.stdout.read().decode(errors="replace")[-2000:])
        server = children(proc.pid)
        assert server == visualdl_processes(port)
        yield proc, server[0]
    finally:
        kill_all(proc, server)
