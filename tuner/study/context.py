"""StudyContext: everything a trial needs that does not depend on the trial, built once per process.

- the model and the EvalContext (baseline images, reference features, classifier),
- the baseline's metrics: measured in the study's first process and stored as the study user attribute
  `baseline`, so every process and every resume normalizes latency and places the hypervolume reference
  point against the same numbers,
- the baseline's FID on the cheap-reject subset,
- what each searched method's `prepare` hook measures once (CA-ToMe: the Jaccard profile, stored as the
  study user attribute `jaccard_profile` and reused on resume and by other processes; quantization: the
  calibration on the baseline trajectory),
- the SpaceContext and the search space.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tuner.config import method_specs
from tuner.errors import TunerError
from tuner.study.spec import StudySpec

BASELINE_ATTR = "baseline"
MODEL_ATTR = "model_id"
ENVIRONMENT_ATTR = "environment"  # device and versions the study measured on (what export reports)


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

    def proxy_set(self, n_images: int):
        """The study's proxy set (seed, steps) with `n_images` images (at least 2)."""
        from tuner.evaluate import ProxySet

        ps = self.spec.proxy_set
        return ProxySet(max(2, n_images), ps.steps, ps.seed)


@dataclass
class StudyContext:
    spec: StudySpec
    eval: Any  # tuner.evaluate.EvalContext
    space: Any  # search_spaces.space.SearchSpace
    baseline: dict  # stored baseline metrics (fid, seconds_per_image, bitops, macs, ...)
    subset_baseline_fid: float | None  # baseline FID on the cheap-reject subset
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
        from tuner.evaluate import EvalContext, ProxySet
        from tuner.proxy.model import load_proxy_pipeline

        t0 = time.perf_counter()
        timings = {}
        if pipe is None:
            pipe = load_proxy_pipeline(spec.model.device, spec.model.unet_weights)
        ps = spec.proxy_set
        ev = spec.evaluator
        ectx = EvalContext(pipe, ProxySet(ps.n_images, ps.steps, ps.seed), ev.feature_extractor,
                           ev.inception_weights, latency_images=ev.latency_images,
                           latency_repeats=ev.latency_repeats, progress=progress)
        stored = dict(study.user_attrs) if study is not None else {}

        t = time.perf_counter()
        log("baseline: generating and timing the proxy set")
        measured = ectx.evaluate_baseline()
        baseline = stored.get(BASELINE_ATTR) or {k: v for k, v in measured.items() if isinstance(v, (int, float, str))}
        timings["baseline"] = time.perf_counter() - t

        subset_fid = None
        k = ev.cheap_reject_images
        if k and k < ps.n_images and spec.constraints.max_fid_increase is not None:
            subset = ectx.proxy_set.subset(k)
            subset_fid = float(ectx.quality(ectx.baseline_subset(k), subset)["fid"])

        facts: dict = {}
        prep = PrepareContext(spec, pipe, study, log, progress)
        specs = method_specs()
        for name in spec.methods:  # per-study work a method declares (a Jaccard profile, a calibration)
            t = time.perf_counter()
            facts.update(specs[name].config_cls.prepare(prep))
            if time.perf_counter() - t > 0.01:
                timings[f"prepare_{name}"] = time.perf_counter() - t

        space_ctx = SpaceContext(ps.steps, num_train_timesteps=int(pipe.scheduler.config.num_train_timesteps),
                                 max_branch=_max_branch(pipe), **facts)
        space = build_space(spec.space, space_ctx)
        context = cls(spec, ectx, space, baseline, subset_fid, getattr(pipe, "model_id", "custom"),
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


def _max_branch(pipe) -> int:
    from tuner.methods.deepcache import max_branch

    try:
        return max_branch(pipe.unet)
    except TunerError:
        return 0
