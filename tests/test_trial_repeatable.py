"""A trial is repeatable: the same candidate and seed give the same figures, whatever ran
before it in the process (the model's initial weights are seeded too, not only training)."""

import torch

from condsearch.orchestrate._trial import TrialSpec, run_trial

TASK = {"dataset": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, "train_limit": 300}
ARCH = {
    "model": {"backbone": "token_transformer", "dim": 16, "depth": 2, "heads": 4, "patch_size": 4,
              "components": {}},
    "train": {"epochs": 3, "batch_size": 32, "lr": 5e-3, "eval_batch_size": 64},
}


def test_the_same_candidate_and_seed_give_the_same_accuracy_after_other_random_draws():
    first = run_trial(TrialSpec(number=0, arch=ARCH, task=TASK, sweep={}, seed=5))
    torch.rand(1000)  # whatever else used the global generator in between
    second = run_trial(TrialSpec(number=0, arch=ARCH, task=TASK, sweep={}, seed=5))
    assert first.ok and second.ok, (first.error, second.error)
    assert first.metrics["accuracy"] == second.metrics["accuracy"]
    assert first.metrics["flops"] == second.metrics["flops"]
