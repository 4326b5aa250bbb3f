"""The front in MLflow's own UI, seen by a real browser: a tiny real search, `condsearch ui` on
its workdir, and headless Chromium (driven over the DevTools protocol) opening the links `ui`
prints. The first shows every point in a scatter of accuracy against FLOPs, the front's runs
coloured and grouped apart; the second the front alone, its run count the front's size.

Needs a Chromium binary (Debian's `chromium`; `.ci/run` installs it where missing) and the
`websockets` package (the test extra); skips with the reason without them. The screenshot is
saved in the test's folder, and also at $CONDSEARCH_UI_SCREENSHOT when that is set;
docs/mlflow-front.png was taken the same way (`served_ui`, `Chromium`) on the quick start's
search."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import cli, free_port, wait_until

SPACE = """\
name: ui_digits
task: {dataset: digits, train_limit: 600}
model:
  backbone: token_transformer
  dim: {choice: [8, 16]}
  depth: {int: [1, 3]}
  heads: 4
  patch_size: 4
  components:
    early_exit:
      enabled: {choice: [true, false]}
      threshold: {float: [0.3, 0.9]}
objectives: [accuracy, flops]
train: {epochs: 3, batch_size: 32, lr: 1.0e-2, eval_batch_size: 256}
sampler: random
sweep: {early_exit.threshold: [0.3, 0.5, 0.7]}
search: {trials: 6, seed: 1}
"""

#: the front's colour in the views (condsearch.track._view.FRONT_COLOUR), as the SVG writes it
FRONT_FILL = "rgb(255, 127, 14)"
WIDTH, HEIGHT = 1400, 900


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 60,
                   "Chromium did not open its DevTools port")
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as response:
            (page,) = [t for t in json.load(response) if t["type"] == "page"]
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ws.__enter__()  # closed by close()
        self.ids = itertools.count(1)
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params) -> dict:
        number = next(self.ids)
        self.ws.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:  # events in between are of no interest here
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == number:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return None if "exceptionDetails" in result else result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url="about:blank")  # a new document, not a hash change
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        text = (self.js("document.body && document.body.innerText") or "")[:1500]
        pytest.fail(f"{what} within {timeout:.0f} s; the page shows:\n{text}")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


# What the page holds, read in the page: the runs count under the table, the run ids the table
# links to, and the scatter's points (Plotly draws each as a path.point) with their fill colour.
PAGE_STATE = """(() => {
  const text = document.body ? document.body.innerText : '';
  const count = text.match(/(\\d+)\\s+matching runs/);
  const group = text.match(/Group: true\\s+(\\d+)/);
  const runs = [...document.querySelectorAll('a[href*="/runs/"]')]
    .map(a => (a.getAttribute('href').match(/\\/runs\\/([0-9a-f]{32})/) || [])[1]).filter(Boolean);
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(
    p => p.querySelector('.scatterlayer'));
  const points = plots.flatMap(p => [...p.querySelectorAll('.scatterlayer path.point')]);
  const title = (p, c) => { const t = p.querySelector(c); return t ? t.textContent : null; };
  return {
    count: count ? +count[1] : null, frontGroup: group ? +group[1] : null,
    runs: [...new Set(runs)], href: location.href, text: text.slice(0, 3000),
    scatters: plots.length, points: points.length,
    fills: points.map(p => p.style.fill || p.getAttribute('fill') || ''),
    xTitle: plots.length ? title(plots[0], '.xtitle') : null,
    yTitle: plots.length ? title(plots[0], '.ytitle') : null,
  };
})()"""


@pytest.fixture
def chromium(tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("websockets", reason="driving Chromium needs pip install websockets "
                        "(the test extra)")
    browser = Chromium(binary, Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)))
    yield browser
    browser.close()


def served_ui(workdir: Path, port: int, log: Path) -> tuple[subprocess.Popen, list[str]]:
    """`condsearch ui` on `workdir`, once its server answers; the process and the links it
    printed."""
    proc = subprocess.Popen([sys.executable, "-m", "condsearch", "ui", "--workdir", str(workdir),
                             "--port", str(port)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)

    def answers() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_until(answers, 180, "the MLflow UI did not answer")
    return proc, re.findall(r"http://127\.0\.0\.1:\d+/#/\S+", log.read_text())


@pytest.mark.slow
def test_the_links_ui_prints_show_the_front_in_mlflows_scatter(tmp_path, chromium):
    """About 50 s on 2 busy cores: the search 20 s, the UI server's start 15 s, the pages 10 s."""
    from mlflow import MlflowClient

    (tmp_path / "space.yaml").write_text(SPACE)
    workdir = tmp_path / "run"
    done = cli("search", str(tmp_path / "space.yaml"), "--workdir", str(workdir), "--quiet")
    assert done.returncode == 0, done.stderr
    front = json.loads(cli("pareto", "--workdir", str(workdir), "--json").stdout)
    points = json.loads(cli("pareto", "--workdir", str(workdir), "--json", "--all").stdout)
    assert 1 <= len(front) < len(points)  # something to tell apart
    store = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    (experiment,) = store.search_experiments(filter_string="name = 'ui_digits'")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    port = free_port()
    proc, links = served_ui(workdir, port, tmp_path / "ui.log")
    try:
        assert len(links) == 2, (tmp_path / "ui.log").read_text()
        every, alone = links
        assert "/runs?workflowType=machine_learning&viewStateShareKey=" in every
        assert "compareRunsMode=CHART" in every and "compareRunsMode=CHART" in alone

        # Every point: one scatter of accuracy against FLOPs, the front orange and grouped.
        chromium.open(every)
        shown = chromium.wait_for(
            f"(() => {{ const s = {PAGE_STATE}; return s.points === {len(points)} "
            f"&& s.count !== null ? s : null }})()", 90, f"a scatter of {len(points)} points")
        assert shown["scatters"] == 1, shown["text"]
        assert (shown["xTitle"], shown["yTitle"]) == ("flops", "accuracy")
        assert shown["count"] == len(points)
        assert shown["frontGroup"] == len(front)
        assert shown["fills"].count(FRONT_FILL) == len(front), shown["fills"]
        assert "searchFilter=" in shown["href"]  # the view's filter, applied
        # MLflow's model-training side, not its GenAI one (no judges, no trace overview)
        assert "Judges" not in shown["text"] and "Detect Issues" not in shown["text"]
        # The assistant panel MLflow opens on a first visit narrows the chart.
        chromium.js("[...document.querySelectorAll('button[aria-label=\"Close\"]')]"
                    ".forEach(b => b.click())")
        time.sleep(1.5)  # the chart widens to the freed space
        chromium.screenshot(tmp_path / "mlflow-front.png")
        if os.environ.get("CONDSEARCH_UI_SCREENSHOT"):
            shutil.copyfile(tmp_path / "mlflow-front.png", os.environ["CONDSEARCH_UI_SCREENSHOT"])

        # The front alone: the filter's run count is the front's size, its runs the front's.
        chromium.open(alone)
        shown = chromium.wait_for(
            f"(() => {{ const s = {PAGE_STATE}; return s.points === {len(front)} "
            f"&& s.count !== null ? s : null }})()", 60, f"a scatter of {len(front)} points")
        assert shown["count"] == len(front), shown["text"]
        assert sorted(shown["runs"]) == sorted(p["run_id"] for p in front)
        assert shown["fills"] == [FRONT_FILL] * len(front)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_the_views_are_written_once_and_leave_a_kind_and_colours_someone_chose(mlflow_store,
                                                                                 request):
    from mlflow import MlflowClient

    from condsearch.track import FRONT_VIEW, POINTS_VIEW, colour_runs, view_state, write_views
    from condsearch.track._view import FRONT_COLOUR, OTHER_COLOUR, VIEW_TAG_PREFIX

    client = MlflowClient(mlflow_store)
    experiment = client.create_experiment(request.node.nodeid, tags={
        "mlflow.experimentKind": "genai_development"})  # someone's choice: kept
    runs = {}
    for name, tags in {"front": {"condsearch.pareto": "true"},
                       "other": {"condsearch.pareto": "false"},
                       "chosen": {"condsearch.pareto": "true", "mlflow.runColor": "#123456"},
                       "search": {"condsearch.role": "search"}}.items():
        runs[name] = client.create_run(experiment, tags=tags).info.run_id
    path = write_views(mlflow_store, experiment)
    assert path == (f"/#/experiments/{experiment}/runs?workflowType=machine_learning"
                    f"&viewStateShareKey={POINTS_VIEW}&compareRunsMode=CHART")
    tags = client.get_experiment(experiment).tags
    assert tags["mlflow.experimentKind"] == "genai_development"
    for key in (POINTS_VIEW, FRONT_VIEW):
        envelope = json.loads(tags[VIEW_TAG_PREFIX + key])
        state = json.loads(envelope["state"])
        assert state == view_state(key) and envelope["name"].startswith("condsearch: ")
        (chart,) = state["compareRunCharts"]
        assert (chart["type"], chart["xaxis"], chart["yaxis"]) == (
            "SCATTER", {"key": "flops", "type": "METRIC"}, {"key": "accuracy", "type": "METRIC"})
        assert state["orderByKey"] == "metrics.`accuracy`"  # not start time: no parents pulled in
    assert json.loads(tags[VIEW_TAG_PREFIX + FRONT_VIEW])["state"].count(
        "tags.`condsearch.pareto` = 'true'") == 1

    def colour(name: str) -> str | None:
        return client.get_run(runs[name]).data.tags.get("mlflow.runColor")

    assert [colour(n) for n in runs] == [FRONT_COLOUR, OTHER_COLOUR, "#123456", None]
    assert write_views(mlflow_store, experiment) == path
    assert client.get_experiment(experiment).tags == tags  # nothing rewritten, not even a date
    client.set_tag(runs["front"], "condsearch.pareto", "false")  # the front moved on
    assert colour_runs(mlflow_store, experiment) == 1 and colour("front") == OTHER_COLOUR
    bare = client.create_experiment(request.node.nodeid + " (no kind)")
    write_views(mlflow_store, bare)
    assert client.get_experiment(bare).tags["mlflow.experimentKind"] == "custom_model_development"
