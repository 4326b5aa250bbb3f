"""Search your own PyTorch network: a small CNN hosting condsearch's early exit, registered by
name, searched on digits, exported, loaded and evaluated on the test split.
Run: python examples/own_backbone.py   (CONDSEARCH_EXAMPLE_TINY=1: seconds, not minutes)"""

import os
import shutil
from pathlib import Path

from torch import nn

import condsearch as cs
from condsearch.blocks import EarlyExit

TINY = os.environ.get("CONDSEARCH_EXAMPLE_TINY") == "1"
OUT = Path(os.environ.get("CONDSEARCH_EXAMPLE_OUT", "runs/examples")) / "own_backbone"


@cs.declare_backbone(params={"width": cs.Param("int", 8, lo=1, doc="conv channels")},
                     hosts=("early_exit",))   # its keys and the components it hosts
def build(model, io):
    """factory(model_section, io) -> nn.Module: two conv stages, an exit after the first."""
    channels, width = io["input_shape"][0], model["width"]
    stages = [nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()),
              nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())]

    def head(position):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, io["num_classes"]))
    early = model["components"]["early_exit"]   # completed with the declared defaults
    if early["enabled"]:
        return EarlyExit(stages, head, [1], criterion=early["criterion"],
                         threshold=early["threshold"], loss_weight=early["loss_weight"])
    return nn.Sequential(*stages, head(2))


cs.register_backbone("my_cnn", build)   # `backbone: my_cnn` in this process, as declared

shutil.rmtree(OUT, ignore_errors=True)   # start afresh: the same workdir again would resume
OUT.mkdir(parents=True)
(OUT / "space.yaml").write_text(f"""\
name: my_cnn_digits
task: {{dataset: digits{", train_limit: 200" if TINY else ""}}}
model:
  backbone: my_cnn
  width: {{choice: [8, 16, 32]}}
  components:
    early_exit:
      enabled: {{choice: [true, false]}}
train: {{epochs: {1 if TINY else 30}, batch_size: 32, lr: {{float: [3.0e-3, 3.0e-2], log: true}}}}
sweep: {{early_exit.threshold: [0.5, 0.8, 0.95]}}
search: {{trials: {2 if TINY else 12}, seed: 0}}
""")

summary = cs.search(OUT / "space.yaml", workdir=OUT / "run", progress=not TINY)
print(f"{summary.completed} trials in {summary.seconds:.0f} s; the front:")
for point in summary.front:
    print(f"  point {point.number}: accuracy {point.values['accuracy']:.3f}, "
          f"{point.values['flops']:,.0f} FLOPs/sample, knobs {point.knobs}")

exported = cs.export_point(OUT / "run", OUT / "knee", pick="knee")
model = cs.load_exported(exported)   # elsewhere too once `build` lives in an importable module
test = cs.evaluate_exported(exported, split="test")
print(f"the knee, exported to {exported} (study and MLflow: {OUT / 'run'}), is a "
      f"{type(model).__name__}: test accuracy {test['accuracy']:.3f}, {test['flops']:,.0f} FLOPs")
