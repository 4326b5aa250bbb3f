"""A search space as the objective of your own Optuna study: your sampler, your storage, your
`study.optimize`; condsearch trains and measures each candidate and records its constraints
and knob-sweep points in your study.
Run: python examples/optuna_objective.py   (CONDSEARCH_EXAMPLE_TINY=1: seconds, not minutes)"""

import os
import shutil
from pathlib import Path

import optuna

import condsearch as cs

TINY = os.environ.get("CONDSEARCH_EXAMPLE_TINY") == "1"
OUT = Path(os.environ.get("CONDSEARCH_EXAMPLE_OUT", "runs/examples")) / "optuna_objective"

shutil.rmtree(OUT, ignore_errors=True)
OUT.mkdir(parents=True)
(OUT / "space.yaml").write_text(f"""\
name: objective_digits
task: {{dataset: digits{", train_limit: 200" if TINY else ""}}}
model:
  backbone: token_transformer
  dim: {{choice: [8, 16, 32]}}
  depth: {{int: [2, 3]}}
  heads: 2
  patch_size: 4
  components:
    early_exit: {{enabled: true, every: 1, threshold: 0.9}}
objectives: [accuracy, flops]
constraints: {{max_flops: 60000}}        # infeasible trials stay in the study, off the front
train: {{epochs: {1 if TINY else 20}, batch_size: 32, lr: {{float: [1.0e-3, 1.0e-2], log: true}}}}
sweep: {{early_exit.threshold: [0.5, 0.99]}}
""")
space = cs.load_space(OUT / "space.yaml")

optuna.logging.set_verbosity(optuna.logging.WARNING)
objective = cs.Objective(space)
study = optuna.create_study(directions=objective.directions(),   # ["maximize", "minimize"]
                            sampler=optuna.samplers.TPESampler(seed=0),
                            storage=f"sqlite:///{OUT / 'study.db'}", study_name="mine")
study.optimize(objective, n_trials=2 if TINY else 16)

# every trained trial adds a trial per swept threshold (user attribute condsearch.derived_from)
print(f"{len(study.trials)} trials in {OUT / 'study.db'}; the feasible front (best_trials):")
for best in study.best_trials:   # constraints > 0 (here: over max_flops) keep a trial off it
    accuracy, flops = best.values
    print(f"  trial {best.number}: accuracy {accuracy:.3f}, {flops:,.0f} FLOPs/sample, "
          f"knobs {best.user_attrs['condsearch.knobs']}, constraints {best.constraints}")

best = max(study.best_trials, key=lambda t: t.values[0])
arch = cs.arch_from_params(space, best.params)   # the plain dict build_model reads
print(f"trial {best.number}'s arch (trained as): {arch['model']}")
