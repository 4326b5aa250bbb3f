"""A search logged into your own MLflow run: inside `mlflow.start_run()`, the search's parent
run nests under yours, in your store and experiment, and your tags go on every run it makes.
Run: python examples/mlflow_existing_run.py   (CONDSEARCH_EXAMPLE_TINY=1: seconds, not minutes)"""

import math
import os
import shutil
from pathlib import Path

import mlflow

import condsearch as cs

TINY = os.environ.get("CONDSEARCH_EXAMPLE_TINY") == "1"
OUT = Path(os.environ.get("CONDSEARCH_EXAMPLE_OUT", "runs/examples")) / "mlflow_existing_run"

shutil.rmtree(OUT, ignore_errors=True)
OUT.mkdir(parents=True)
space = cs.load_space("search_spaces/digits_early_exit.yaml", overrides=[
    f"train.epochs={1 if TINY else 10}", f"search.trials={2 if TINY else 8}",
    *(["task.train_limit=200", "sweep={early_exit.threshold: [0.5, 0.9]}"] if TINY else [])])

mlflow.set_tracking_uri(f"sqlite:///{OUT / 'mlflow.db'}")   # your store (or a server's URL)
experiment = mlflow.create_experiment(    # artifacts beside the store, not in ./mlruns
    "my-team-experiments", artifact_location=(OUT / "mlartifacts").resolve().as_uri())
with mlflow.start_run(experiment_id=experiment, run_name="my-experiment") as mine:
    mlflow.log_param("dataset", "digits")                     # your own records, as usual
    summary = cs.search(space, workdir=OUT / "run", tags={"team": "nas"}, progress=False)
    mlflow.log_metric("front_size", len(summary.front))

print(f"{summary.completed} trials; the search's parent run {summary.parent_run_id} "
      f"in {summary.tracking_uri}")
runs = mlflow.search_runs(experiment_ids=[mine.info.experiment_id],
                          filter_string="tags.team = 'nas'", order_by=["start_time ASC"])
names = dict(zip(runs["run_id"], runs["tags.mlflow.runName"]))
names[mine.info.run_id] = "my-experiment"
derived = runs["tags.condsearch.role"] == "derived"   # one per swept threshold, under its trial
print(f"{len(runs)} runs tagged team=nas ({derived.sum()} derived points); the others:")
for _, run in runs[~derived].iterrows():
    parent, accuracy = names[run["tags.mlflow.parentRunId"]], run["metrics.accuracy"]
    print(f"  {run['tags.mlflow.runName']:<24} under {parent:<24} "
          + ("" if math.isnan(accuracy) else f"accuracy {accuracy:.3f}"))
print(f"browse them: mlflow ui --backend-store-uri sqlite:///{OUT / 'mlflow.db'}")
