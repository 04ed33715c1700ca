"""`tuner study run` for the fault tests (tests/test_study_faults.py): the real CLI, runner, storage,
budget and heartbeat, with a stand-in model. Setup ("the baseline") and every trial are sleeps of known
length, so a test can kill a worker at a known moment without spending minutes of CPU on the model.

    python tests/fault_worker.py study run STUDY.toml [options]     (any `tuner` command line)

Environment: FAULT_SETUP_S (setup sleep, default 0), FAULT_TRIAL_S (trial sleep, default 0.3),
FAULT_FAIL_TRIALS (comma-separated trial numbers that fail by their own config, like a NaN).
"""

from __future__ import annotations

import os
import sys
import time

SETUP_S = float(os.environ.get("FAULT_SETUP_S", "0"))
TRIAL_S = float(os.environ.get("FAULT_TRIAL_S", "0.3"))
FAIL_TRIALS = {int(n) for n in os.environ.get("FAULT_FAIL_TRIALS", "").split(",") if n}


class FakeContext:
    """What the runner needs of a StudyContext: a search space, a baseline, record()."""

    def __init__(self, spec):
        from tuner.search_spaces.space import SpaceContext, build_space

        self.spec = spec
        self.space = build_space(spec.space, SpaceContext(spec.image_set.steps))
        self.baseline = {"fid": 10.0, "seconds_per_image": 1.0, "bitops": 1.0}
        self.setup_seconds = SETUP_S

    @classmethod
    def build(cls, spec, study=None, progress=False, pipe=None, log=lambda m: None):
        log("baseline: (fault test) sleeping")
        time.sleep(SETUP_S)
        context = cls(spec)
        if study is not None:
            context.record(study)
        return context

    def record(self, study):
        if "baseline" not in study.user_attrs:
            study.set_user_attr("baseline", self.baseline)


class FakeObjective:
    def __init__(self, context, spec=None):
        self.ctx, self.eval_seconds = context, 0.0

    def __call__(self, trial):
        from tuner.study.objective import TrialFailed

        values = self.ctx.space.suggest(trial)
        trial.set_user_attr("config", {})
        time.sleep(TRIAL_S)
        self.eval_seconds += TRIAL_S
        if trial.number in FAIL_TRIALS:
            raise TrialFailed("NaN in generated images (fault test)")
        x = next((v for v in values.values() if isinstance(v, float)), 0.5)
        trial.set_user_attr("seconds_per_image", 1.0 - 0.5 * x)
        trial.set_user_attr("fid", 10.0 * (1.0 + x))
        return [1.0 - 0.5 * x, 10.0 * (1.0 + x)]


def main(argv: list[str]) -> int:
    from tuner import cli
    from tuner.storage import workers
    from tuner.study import context, runner, spec

    spec.validate_space_and_sampler = lambda s: None  # builds the real model; the space is checked by FakeContext
    context.StudyContext = FakeContext
    runner.TrialObjective = FakeObjective
    workers.worker_command = lambda: [sys.executable, os.path.abspath(__file__)]  # --workers: stand-ins too
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
