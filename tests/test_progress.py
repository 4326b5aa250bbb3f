"""What a person watching a search sees: one line a trial, counted k/N over this invocation's
trials (derived points never make the count jump), the time left and the best points so far."""

import io

from rich.console import Console

from condsearch.orchestrate._points import Point
from condsearch.orchestrate._progress import SearchProgress


def point(number: int, acc: float, flops: float) -> Point:
    return Point(number=number, trial=number, derived=False,
                 values={"accuracy": acc, "flops": flops})


def test_each_trial_is_counted_k_of_n_with_time_left_and_the_best_points():
    bar = SearchProgress(3, enabled=True)
    out = io.StringIO()
    bar.console = Console(file=out, width=200)
    front = [point(0, 0.9, 2e6), point(1, 0.7, 5e4)]
    # study numbers jump where derived points took numbers in between
    for number in (0, 1, 8):
        bar.trial_done(number, number != 1, 2.0, "acc 0.9000, FLOPs 2M", front, 1.5)
    lines = out.getvalue().splitlines()
    assert [line.split(" trial ")[0][2:] for line in lines] == ["1/3", "2/3", "3/3"]
    assert [line.split(" trial ")[1].split(" ")[0] for line in lines] == ["0", "1", "8"]
    assert "left)" in lines[0] and "left)" in lines[1] and "left" not in lines[2].split(":")[0]
    assert lines[0].endswith("front 2 pts, best acc 0.9000 @ 2M FLOPs, cheapest 50k FLOPs @ "
                             "acc 0.7000, HV 1.5")
    assert lines[1].startswith("✗ 2/3 trial 1")
