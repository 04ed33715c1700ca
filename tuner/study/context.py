"""StudyContext: everything a trial needs that does not depend on the trial, built once per process.

- the model and the ScoringContext (baseline images, reference features, classifier),
- the baseline's metrics: measured in the study's first process and stored as the study user attribute
  `baseline`, so every process and every resume normalizes latency and places the hypervolume reference
  point against the same numbers,
- each searched method's model facts, measured by its own `prepare` hook once (ToMe: its first attention
  level; DeepCache: its deepest branch; CA-ToMe: the Jaccard profile, stored as the study user attribute
  `jaccard_profile` and reused on resume and by other processes; quantization: the calibration on the
  baseline trajectory and the layer names),
- the SpaceContext (facts every method shares, plus each method's own) and the search space.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tuner.config import method_specs
from tuner.errors import TunerError
from tuner.storage.keys import BASELINE_ATTR, ENVIRONMENT_ATTR, MODEL_ATTR
from tuner.study.spec import StudySpec


@dataclass
class PrepareContext:
    """What a method's `prepare` hook may use: the study's settings, the model, and a per-study store."""

    spec: StudySpec
    pipe: Any
    study: Any  # optuna.Study, or None (nothing is stored)
    log: Callable[[str], None]
    progress: bool

    def remember(self, attr: str, compute: Callable[[], Any]) -> Any:
        """A JSON-able value measured once per study: stored as a study user attribute, reused on
        resume and by cooperating processes."""
        stored = self.study.user_attrs.get(attr) if self.study is not None else None
        if stored:
            return stored
        value = compute()
        if self.study is not None:
            self.study.set_user_attr(attr, value)
        return value

    def image_set(self, n_images: int):
        """The study's image set (seed, steps, prompts) with `n_images` images (at least 2); its
        `conditions` are what the model generates from (digit classes or prompts)."""
        return image_set_of(self.spec, max(2, n_images))


@dataclass
class StudyContext:
    spec: StudySpec
    eval: Any  # tuner.scoring.ScoringContext
    space: Any  # search_spaces.space.SearchSpace
    baseline: dict  # stored baseline metrics (fid, seconds_per_image, bitops, macs, ...)
    model_id: str
    setup_seconds: float = 0.0
    timings: dict = field(default_factory=dict)

    @property
    def pipe(self):
        return self.eval.pipe

    @classmethod
    def build(cls, spec: StudySpec, study=None, progress: bool = False, pipe=None, log=lambda msg: None) -> "StudyContext":
        """`study` (an optuna.Study) holds the stored baseline and profile; without one everything is
        measured here. `pipe` overrides the model (tests)."""
        from tuner.search_spaces.space import SpaceContext, build_space
        from tuner.scoring import ScoringContext

        t0 = time.perf_counter()
        timings = {}
        if pipe is None:
            pipe = spec.model.load()
        ps = spec.image_set
        ev = spec.evaluator
        ectx = ScoringContext(pipe, image_set_of(spec), ev.feature_extractor, ev.inception_weights,
                           latency_images=ev.latency_images, latency_repeats=ev.latency_repeats, progress=progress,
                           reference_images=ev.reference_images, clip_model=ev.clip_model)
        stored = dict(study.user_attrs) if study is not None else {}

        from tuner.progress import Overall

        t = time.perf_counter()
        log("baseline: generating and timing the image set")
        setup = Overall(1 + len(spec.methods), "setup", progress, log, unit="stage")  # baseline, then each prepare
        measured = ectx.evaluate_baseline()
        baseline = stored.get(BASELINE_ATTR) or {k: v for k, v in measured.items() if isinstance(v, (int, float, str))}
        timings["baseline"] = time.perf_counter() - t
        setup.advance("baseline")

        facts: dict = {}
        prep = PrepareContext(spec, pipe, study, log, progress)
        specs = method_specs()
        for name in spec.methods:  # what each method needs to know about the model (a level, a profile)
            t = time.perf_counter()
            facts[name] = specs[name].config_cls.prepare(prep)
            if time.perf_counter() - t > 0.01:
                timings[f"prepare_{name}"] = time.perf_counter() - t
            setup.advance(f"prepare {name}")
        setup.close()

        space_ctx = SpaceContext(ps.steps, num_train_timesteps=int(pipe.scheduler.config.num_train_timesteps),
                                 facts=facts)
        space = build_space(spec.space, space_ctx)
        context = cls(spec, ectx, space, baseline, getattr(pipe, "model_id", "custom"),
                      time.perf_counter() - t0, timings)
        if study is not None:
            context.record(study)
        return context

    def record(self, study) -> None:
        """Store what every trial of `study` is measured against (baseline, model, machine), unless the
        study already holds them: a resumed or cooperating run keeps the first run's baseline."""
        attrs = study.user_attrs
        if BASELINE_ATTR not in attrs:
            study.set_user_attr(BASELINE_ATTR, self.baseline)
            study.set_user_attr(MODEL_ATTR, self.model_id)
        if ENVIRONMENT_ATTR not in attrs:
            from tuner.study.export import machine_environment

            study.set_user_attr(ENVIRONMENT_ATTR, machine_environment(self.pipe.device))


def image_set_of(spec: StudySpec, n_images: int | None = None):
    from tuner.scoring import ImageSet

    ps = spec.image_set
    return ImageSet(n_images or ps.n_images, ps.steps, ps.seed, ps.prompts)


def check_runnable(spec: StudySpec, cuda=None) -> None:
    """What only this machine can say, before a study database is created: the device exists, the dtype
    runs on it, GPU-only metrics have a GPU, Inception weights can be had. `cuda` replaces torch.cuda (tests)."""
    from tuner.models.dtype import check_dtype
    from tuner.proxy.model import resolve_device

    try:
        dev = resolve_device(spec.model.run_device)
    except TunerError as e:
        raise TunerError(f"model.device: {e}") from None
    if not spec.model.is_proxy:
        check_dtype(spec.model.dtype, dev, cuda)
    if dev.type != "cuda" and ("memory" in spec.objectives or spec.constraints.max_memory_gb is not None):
        raise TunerError("peak memory (objective 'memory', constraints.max_memory_gb) is measured on CUDA only; "
                         f"this study runs on {dev}")
    if not spec.model.is_proxy and spec.evaluator.inception_weights is None:
        from tuner.evaluators.fidelity import cached_inception_weights
        from tuner.models.source import is_online

        if cached_inception_weights() is None and not is_online("github.com"):
            raise TunerError("FID on a user model needs torch-fidelity's Inception weights and the machine is offline: "
                             "set [evaluator] inception_weights = PATH to weights-inception-2015-12-05-6726825d.pth")
