"""Your own Ray Tune Tuner with condsearch's trainable and searcher, under ASHA: candidates that
lag after an epoch are stopped early and recorded PRUNED in the Optuna study; the others finish
with their accuracy and mean per-sample FLOPs.
Run: python examples/ray_tune_asha.py   (CONDSEARCH_EXAMPLE_TINY=1: seconds, not minutes)"""

import os
import shutil
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

import condsearch as cs

TINY = os.environ.get("CONDSEARCH_EXAMPLE_TINY") == "1"
OUT = Path(os.environ.get("CONDSEARCH_EXAMPLE_OUT", "runs/examples")).resolve() / "ray_tune_asha"

shutil.rmtree(OUT, ignore_errors=True)
OUT.mkdir(parents=True)
(OUT / "space.yaml").write_text(f"""\
name: asha_digits
task: {{dataset: digits{", train_limit: 300" if TINY else ""}}}
model:
  backbone: token_transformer
  dim: {{choice: [8, 16, 32]}}
  depth: 2
  heads: 2
  patch_size: 4
objectives: [accuracy, flops]
train: {{epochs: 3, batch_size: 64, lr: {{float: [1.0e-5, 1.0e-2], log: true}}}}
""")
space = cs.load_space(OUT / "space.yaml")

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a cluster: address="auto"
searcher = cs.tune.Searcher(space)   # Optuna ask/tell on an in-memory study (or study=, storage=)
tuner = tune.Tuner(
    cs.tune.trainable(space),        # reports loss, accuracy and flops every epoch
    tune_config=tune.TuneConfig(
        search_alg=searcher, num_samples=4 if TINY else 12,
        scheduler=ASHAScheduler(metric="accuracy", mode="max", grace_period=1, max_t=3)),
    run_config=tune.RunConfig(name="asha", storage_path=str(OUT / "ray"), verbose=0),
)
try:
    tuner.fit()
finally:
    searcher.close_unfinished()      # nothing stays RUNNING in the study, whatever happened
    ray.shutdown()

for trial in searcher.study.trials:
    print(trial.number, trial.state.name, trial.values or trial.user_attrs.get("condsearch.last_report"))
