"""The dashboard of a real run as a user sees it: `slim-callbacks run` (the tiny recipe,
latency measured), then `slim-callbacks dashboard` serving VisualDL on a loopback port,
read through VisualDL's own HTTP API after the run and after a `--resume`, and once in
headless Chromium (a screenshot kept)."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse

import pytest
import yaml
from dashboard_server import free_port, get_json, serving_dashboard
from helpers import TINY_RECIPE

from slim_callbacks.app.cli import main
from slim_callbacks.app.deployment import latency_scalars

# what the training writer must show, whatever else it writes
TRAIN_TAGS = {"train/loss", "train/acc", "eval/loss", "eval/acc", "model/gflops",
              "model/params", "pruning/achieved_ratio", "widths/c1.0", "widths/c2.0",
              "widths/c3.0"}
EPOCHS = [0, 1, 2]  # the tiny recipe's
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run(*args):
    assert main([*args, "--verbose", "0"]) == 0


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """``output/`` holding one finished tiny run, ``tiny``, with latency measured (its
    recipe beside ``output/``, as ``tiny.yaml``)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(dict(TINY_RECIPE, deploy={"latency": True})))
    run("run", str(recipe), "-o", f"output_dir={tmp / 'output' / 'tiny'}")
    return tmp / "output"


def latency_tags(run_dir):
    return set(latency_scalars(json.loads((run_dir / "summary.json").read_text())["latency"]))


def tags_of(base, kind="scalar"):
    """{VisualDL run: set of ``kind`` tags}, once VisualDL has read every record."""
    deadline = time.time() + 30
    while True:
        data = get_json(f"{base}/{kind}/tags")
        if data["runs"] or time.time() > deadline:
            return {name: set(tags) for name, tags in zip(data["runs"], data["tags"])}
        time.sleep(0.5)


def api(port):
    return f"http://127.0.0.1:{port}/app/api"


def steps(base, run_name, tag):
    query = urllib.parse.urlencode({"run": run_name, "tag": tag})
    return [point[1] for point in get_json(f"{base}/scalar/list?{query}")]


def test_visualdl_shows_every_writer_and_every_session_of_a_run(output, tmp_path):
    root = tmp_path / "output"
    shutil.copytree(output, root)
    logs = str(root / "tiny" / "logs")
    port = free_port()
    with serving_dashboard(root, port):
        base = api(port)
        tags = tags_of(base)
        assert sorted(tags) == [f"{logs}/latency", f"{logs}/train"]
        assert TRAIN_TAGS <= tags[f"{logs}/train"], TRAIN_TAGS - tags[f"{logs}/train"]
        assert tags[f"{logs}/latency"] == latency_tags(root / "tiny") != set()
        assert steps(base, f"{logs}/train", "eval/acc") == EPOCHS
        assert steps(base, f"{logs}/latency", "latency/speedup_1_thread") == [EPOCHS[-1]]
        assert tags_of(base, "histogram") == {f"{logs}/train": {"bn/gamma"}}
    # killed during the last epoch, then resumed: a second session of both writers
    checkpoints = root / "tiny" / "checkpoints"
    for name in os.listdir(checkpoints):
        if name.startswith((f"{EPOCHS[-1]}.", "final.")):
            os.remove(checkpoints / name)
    os.remove(root / "tiny" / "summary.json")
    run("run", str(output.parent / "tiny.yaml"), "-o", f"output_dir={root / 'tiny'}", "--resume")
    port = free_port()
    with serving_dashboard(root, port):
        base = api(port)
        tags = tags_of(base)
        assert sorted(tags) == [f"{logs}/{name}" for name in
                                ("latency", "latency-2", "train", "train-2")]
        assert TRAIN_TAGS <= tags[f"{logs}/train-2"], TRAIN_TAGS - tags[f"{logs}/train-2"]
        assert steps(base, f"{logs}/train", "eval/acc") == EPOCHS      # the first session's
        assert steps(base, f"{logs}/train-2", "eval/acc") == EPOCHS[-1:]  # the resumed one's
        assert tags[f"{logs}/latency-2"] == latency_tags(root / "tiny")


def chromium(*args, done, attempts=3, timeout=45):
    """Headless Chromium on a loopback URL (a throw-away profile, no background traffic),
    run until ``done(result)``: on a loaded machine it now and then ends early or hangs.
    At most ``attempts`` x ``timeout`` seconds."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-sync", "--disable-background-networking",
               "--disable-component-update", "--window-size=1400,1000",
               "--virtual-time-budget=20000", *args]
    for _ in range(attempts):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        try:
            result = subprocess.CompletedProcess(command, 0, proc.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            continue
        finally:  # Chromium's helper processes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if done(result):
            return result
    pytest.fail(f"chromium did not finish in {attempts} attempts: {' '.join(command)}")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs "
                                             "it with apt-get)")
def test_the_scalar_page_in_a_browser_shows_every_tag_group_and_run(output, tmp_path):
    from PIL import Image
    png = tmp_path / "dashboard-scalars.png"
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    port = free_port()
    with serving_dashboard("output", port, cwd=output.parent):  # runs named output/tiny/...
        tags = tags_of(api(port))
        page = f"http://127.0.0.1:{port}/app/scalar"
        dom = chromium(profile, "--dump-dom", page, done=lambda r: "<h3>" in r.stdout).stdout
        chromium(profile, f"--screenshot={png}", page, done=lambda r: png.exists())
    if os.environ.get("SLIM_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(png, os.environ["SLIM_DASHBOARD_SCREENSHOT"])
    # the page groups the tags by their prefix: one heading and count per group
    shown = {group: int(n) for group, n in
             re.findall(r'<h3>([^<]+)</h3><span class="total">(\d+)</span>', dom)}
    every_tag = set().union(*tags.values())
    assert shown == {group: sum(t.split("/")[0] == group for t in every_tag)
                     for group in {t.split("/")[0] for t in every_tag}}
    assert {"eval", "latency", "model", "train", "widths"} <= set(shown)
    assert sorted(tags) == ["output/tiny/logs/latency", "output/tiny/logs/train"]
    assert all(name in dom for name in tags)  # every run in the run selector
    with Image.open(png) as image:
        assert image.size == (1400, 1000)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 100  # not blank
