"""The front in MLflow's own UI: ready views of an experiment and the run colours they show.

MLflow's UI (3.x) keeps a saved view of an experiment's runs page as an experiment tag,
`mlflow.sharedViewState.<key>`, whose value is an envelope `{"name", "createdAt", "updatedAt",
"state"}`: `state` is the JSON of the page's search facets (`searchFilter`, `orderByKey`, ...)
and UI state (`compareRunCharts`, `compareRunSections`, `groupBy`, `runsHiddenMode`, ...). The
UI lists such tags in its "Views" menu and loads one from the link
`#/experiments/<id>/runs?viewStateShareKey=<key>`; `compareRunsMode=CHART` in the link opens the
chart view, and `workflowType=machine_learning` the "Model training" side of MLflow 3.17 (its
default is the GenAI overview, whatever the experiment says).

condsearch writes two such views (`write_views`): every point of the experiment grouped by its
`condsearch.pareto` tag, and the front alone, each with one scatter chart of `accuracy` against
`flops`. Sorting by a metric (not by start time) also stops the UI from pulling the parent runs of
matching runs into the list, so the front view counts exactly the front's runs. Points are
coloured through MLflow's own run colour tag, `mlflow.runColor` (`colour_runs`): the front
orange, the rest grey, as in the front's PNG plot.
"""

from __future__ import annotations

import json
import time
from typing import Any

from condsearch.track._pareto_tags import PARETO_TAG as _PARETO_TAG

#: MLflow's experiment tag saying what kind of work an experiment holds
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: the prefix of MLflow's saved-view experiment tags
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: MLflow's run tag holding the colour a run has in the UI's table and charts
RUN_COLOUR_TAG = "mlflow.runColor"
#: the front's colour and the other points' (the front plot's tab:orange, and a light grey)
FRONT_COLOUR = "#ff7f0e"
OTHER_COLOUR = "#b0b0b0"

#: the view of every point, grouped by front membership; the one `condsearch ui` prints first
POINTS_VIEW = "condsearch-points"
#: the view of the front alone
FRONT_VIEW = "condsearch-front"

_FRONT_FILTER = f"tags.`{_PARETO_TAG}` = 'true'"
_POINTS_FILTER = f"tags.`{_PARETO_TAG}` != ''"
_SECTION = "condsearch-front"
_CHART = "condsearch-accuracy-flops"
_NAMES = {POINTS_VIEW: "condsearch: accuracy vs FLOPs, every point (front in orange)",
          FRONT_VIEW: "condsearch: accuracy vs FLOPs, the Pareto front"}


def view_state(key: str, x: str = "flops", y: str = "accuracy") -> dict[str, Any]:
    """The runs-page state of view `key` (POINTS_VIEW or FRONT_VIEW): a scatter of metric `y`
    against metric `x` over the runs its filter matches, sorted by `y`, every run shown."""
    if key not in _NAMES:
        raise ValueError(f"unknown view {key!r}; expected {POINTS_VIEW!r} or {FRONT_VIEW!r}")
    points = key == POINTS_VIEW
    return {
        # search facets: which runs, in which order. A sort other than by start time keeps
        # the parents of matching runs out of the list (MLflow fetches them only then).
        "searchFilter": _POINTS_FILTER if points else _FRONT_FILTER,
        "orderByKey": f"metrics.`{y}`",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        # UI state: the table's columns for its table mode, and the chart view's one section
        "selectedColumns": [f"metrics.`{y}`", f"metrics.`{x}`", f"tags.`{_PARETO_TAG}`",
                            "tags.`condsearch.derived_from`"],
        "columnOrder": [],
        "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL",  # MLflow's default charts only the first 10 runs
        "compareRunCharts": [{
            "uuid": _CHART, "type": "SCATTER", "metricSectionId": _SECTION,
            "xaxis": {"key": x, "type": "METRIC"}, "yaxis": {"key": y, "type": "METRIC"},
            "runsCountToCompare": 1000, "deleted": False, "isGenerated": False,
        }],
        "compareRunSections": [{
            "uuid": _SECTION, "name": "Pareto front", "display": True, "isReordered": False,
            "deleted": False, "isGenerated": False, "columns": 1, "cardHeight": 520,
        }],
        "isAccordionReordered": False,
        "groupBy": ({"aggregateFunction": "max",
                     "groupByKeys": [{"mode": "tag", "groupByData": _PARETO_TAG}]}
                    if points else None),
        "groupsExpanded": {},
        # grouped rows, but every run its own point in the chart (not one per group)
        "useGroupedValuesInCharts": False,
        "hideEmptyCharts": True,
        "viewMaximized": False,
        "runListHidden": False,
        "chartsSearchFilter": "",
    }


def view_path(experiment_id: str, key: str = POINTS_VIEW) -> str:
    """The UI address of view `key` of experiment `experiment_id`, relative to the server's
    root (`/#/experiments/...`): the runs page in chart mode, on MLflow's model-training side."""
    return (f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={key}&compareRunsMode=CHART")


def _envelope(key: str, created: int) -> str:
    return json.dumps({"name": _NAMES[key], "createdAt": created, "updatedAt": created,
                       "state": json.dumps(view_state(key), separators=(",", ":"))})


def _is_current(value: str | None, key: str) -> bool:
    """Whether a view tag's value already holds what condsearch would write."""
    try:
        held = json.loads(value or "")
        return (held["name"] == _NAMES[key]
                and json.loads(held["state"]) == view_state(key))
    except (ValueError, KeyError, TypeError):
        return False


def write_views(uri: str, experiment_id: str, colours: bool = True) -> str:
    """Make experiment `experiment_id` at `uri` open in MLflow's model-training mode (its
    `mlflow.experimentKind` tag, unless it has one) and hold condsearch's two views; colour its
    points (`colour_runs`) when `colours`. Writes only what differs, so calling it again costs
    two reads. Returns `view_path` of the view of every point."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    tags = client.get_experiment(str(experiment_id)).tags
    if not tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(str(experiment_id), EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    now = int(time.time() * 1000)
    for key in (POINTS_VIEW, FRONT_VIEW):
        if not _is_current(tags.get(VIEW_TAG_PREFIX + key), key):
            client.set_experiment_tag(str(experiment_id), VIEW_TAG_PREFIX + key,
                                      _envelope(key, now))
    if colours:
        colour_runs(uri, experiment_id)
    return view_path(str(experiment_id))


def run_colour(on_front: bool) -> str:
    """The `mlflow.runColor` value of a point on the front, or off it."""
    return FRONT_COLOUR if on_front else OTHER_COLOUR


def colour_runs(uri: str, experiment_id: str) -> int:
    """Give every run of the experiment that carries a `condsearch.pareto` tag the colour that
    tag says (`run_colour`), unless someone chose another colour for it in the UI; return the
    runs written."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    ours = {FRONT_COLOUR, OTHER_COLOUR}
    written, token = 0, None
    while True:
        page = client.search_runs([str(experiment_id)], filter_string=_POINTS_FILTER,
                                  max_results=1000, page_token=token)
        for run in page:
            held = run.data.tags.get(RUN_COLOUR_TAG)
            wanted = run_colour(run.data.tags.get(_PARETO_TAG) == "true")
            if held != wanted and (held is None or held in ours):
                client.set_tag(run.info.run_id, RUN_COLOUR_TAG, wanted)
                written += 1
        token = page.token
        if not token:
            return written


def ui_views(uri: str, experiment_id: str) -> tuple[str, str] | None:
    """For `condsearch ui`: `write_views` on the store at `uri`, then (`view_path` of every
    point's view, of the front's); None when the store does not exist yet (a local store no
    search has written, which has nothing to show). On an HTTP server, MLflow's HTTP retries
    are cut to one try of at most 20 s, so a server that is down fails it at once; raises what
    MLflow raises."""
    import os

    from condsearch.track._stale import _store_exists

    if not _store_exists(uri):
        return None
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    saved = {name: os.environ.get(name) for name in quick}
    if uri.startswith(("http://", "https://")):
        os.environ.update({k: v for k, v in quick.items() if saved[k] is None})
    try:
        write_views(uri, experiment_id)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
    return view_path(str(experiment_id), POINTS_VIEW), view_path(str(experiment_id), FRONT_VIEW)
