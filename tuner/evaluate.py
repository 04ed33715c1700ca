"""Scoring one AccelConfig against the un-accelerated baseline, with everything that does not depend on
the candidate (baseline images and latency, reference features, extractor) computed once per context.

Used by `tuner baseline`, `tuner evaluate` and every study trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

from tuner.evaluators.cost import bitops, count_macs
from tuner.evaluators.fidelity import InceptionFeatures, ReferenceFeatures, class_accuracy, fid_kid, frechet_distance_of_features
from tuner.evaluators.latency import interleaved_medians, time_once
from tuner.evaluators.pairwise import pairwise
from tuner.apply_config import apply
from tuner.config import AccelConfig
from tuner.errors import TrialFailed, TunerError
from tuner.proxy.classifier import ClassifierFeatures, load_classifier
from tuner.proxy.data import DATASET_ID, IMAGE_SIZE, NUM_CLASSES, load_digits_split


@dataclass(frozen=True)
class ProxySet:
    """The images every candidate generates: balanced classes, one fixed seed per image."""

    n_images: int = 64
    steps: int = 50
    seed: int = 0

    def __post_init__(self):
        for key in ("n_images", "steps", "seed"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TunerError(f"{key}={value!r} must be an integer")
        if not (2 <= self.n_images <= 100_000):
            raise TunerError(f"n_images={self.n_images} is out of range (2..100000)")
        if not (1 <= self.steps <= 1000):
            raise TunerError(f"steps={self.steps} is out of range (1..1000)")
        if not (0 <= self.seed < 2**31):
            raise TunerError(f"seed={self.seed} is out of range (0..2147483647)")

    @property
    def classes(self) -> list[int]:
        return [i % NUM_CLASSES for i in range(self.n_images)]

    @property
    def seeds(self) -> list[int]:
        return [self.seed * 1_000_003 + i for i in range(self.n_images)]

    def subset(self, n: int) -> "ProxySet":
        return ProxySet(min(n, self.n_images), self.steps, self.seed)


@dataclass
class EvalContext:
    pipe: object  # tuner.pipeline.ProxyPipeline
    proxy_set: ProxySet = field(default_factory=ProxySet)
    extractor_name: str = "proxy"  # proxy | inception
    inception_weights: str | None = None
    latency_images: int = 8  # batch timed for latency (interleaved with the baseline)
    latency_repeats: int = 3
    progress: bool = False

    def __post_init__(self):
        if self.extractor_name not in ("proxy", "inception"):
            raise TunerError(f"unknown feature extractor '{self.extractor_name}' (proxy or inception)")
        self.classifier = load_classifier()
        self.extractor = (ClassifierFeatures(self.classifier) if self.extractor_name == "proxy"
                          else InceptionFeatures(self.inception_weights))
        self.reference = ReferenceFeatures(self.extractor, DATASET_ID, IMAGE_SIZE,
                                           lambda: load_digits_split("heldout")[0])

    # --- computed once ---------------------------------------------------------------------------
    def generate(self, proxy_set: ProxySet | None = None) -> torch.Tensor:
        ps = proxy_set or self.proxy_set
        return self.pipe(ps.classes, ps.seeds, num_inference_steps=ps.steps, progress=self.progress)

    @cached_property
    def baseline_images(self) -> torch.Tensor:
        return self.generate()

    def baseline_subset(self, n: int) -> torch.Tensor:
        return self.baseline_images[:n]

    @cached_property
    def real_vs_real_fid(self) -> float:
        """FID of N real training images against the held-out reference: the floor at this N."""
        train, _ = load_digits_split("train")
        n = min(self.proxy_set.n_images, len(train))
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
        with torch.no_grad():
            feats = self.extractor(train[idx]).double()
        return frechet_distance_of_features(feats, self.reference.features(), self.extractor)

    # --- per candidate ---------------------------------------------------------------------------
    def quality(self, images: torch.Tensor, proxy_set: ProxySet | None = None) -> dict:
        ps = proxy_set or self.proxy_set
        if not torch.isfinite(images).all():
            raise TrialFailed("generated images contain NaN or Inf")
        out = fid_kid(images, self.extractor, self.reference.features())
        out["class_accuracy"] = class_accuracy(images, torch.tensor(ps.classes), self.classifier)
        out.update(pairwise(images, self.baseline_subset(len(images))))
        return out

    def generate_and_count(self, proxy_set: ProxySet | None = None, layer_bits=None) -> tuple[torch.Tensor, dict]:
        """One generation that also counts MACs/BitOPs per image (hooks see what really runs)."""
        ps = proxy_set or self.proxy_set
        box = {}
        macs = count_macs(self.pipe.unet, lambda: box.setdefault("images", self.generate(ps)))
        total_macs = sum(macs.values())
        cost = {"macs": total_macs / ps.n_images, "bitops": bitops(macs, layer_bits) / ps.n_images}
        return box["images"], cost

    def latency(self, config: AccelConfig | None = None, repeats: int | None = None, warmup: int = 1) -> dict:
        """Seconds per image of the baseline and (if given) the candidate, timed interleaved in this
        run. The config is applied before and removed after each candidate call, outside the timing."""
        ps = self.proxy_set.subset(self.latency_images)

        def run():
            self.pipe(ps.classes, ps.seeds, num_inference_steps=ps.steps)

        fns, contexts = {"baseline": run}, {}
        if config is not None:
            fns["candidate"] = run
            contexts["candidate"] = lambda: apply(self.pipe, config)
        med = interleaved_medians(fns, repeats or self.latency_repeats, warmup=warmup, device=self.pipe.device,
                                  contexts=contexts)
        return {k: v / ps.n_images for k, v in med.items()}

    def evaluate_baseline(self) -> dict:
        """The baseline alone. `seconds_per_image` is timed like a candidate's (median of the repeats,
        `latency_images` per call, no counting hooks; the counted generation of the set that runs first is
        its warm-up), so a trial's speedup divided into it gives that trial's latency. `generation_seconds`
        is the counted run that made the baseline set."""
        box = {}

        def run():
            box["images"], box["cost"] = self.generate_and_count()

        generation = time_once(run, self.pipe.device)
        images, cost = box["images"], box["cost"]
        self.__dict__["baseline_images"] = images  # the counted run is the baseline set
        q = self.quality(images)
        return {"n_images": self.proxy_set.n_images, "steps": self.proxy_set.steps,
                "seconds_per_image": self.latency(warmup=0)["baseline"],  # the generation just run warmed up
                "generation_seconds": generation, **q, **cost,
                "real_vs_real_fid": self.real_vs_real_fid, "feature_extractor": self.extractor_name}

    def evaluate(self, config: AccelConfig, proxy_set: ProxySet | None = None, with_latency: bool = True) -> dict:
        """Scores `config` on the proxy set; the pipeline is restored afterwards."""
        ps = proxy_set or self.proxy_set
        self.baseline_images  # make sure the baseline exists before the candidate touches the model
        handle = apply(self.pipe, config)
        try:
            info = dict(handle.info)
            images, cost = self.generate_and_count(ps, info.get("layer_bits"))
        except torch.cuda.OutOfMemoryError:
            raise TrialFailed("out of memory") from None
        finally:
            handle.remove()
        result = {**self.quality(images, ps), **cost, "n_images": ps.n_images}
        result.update({k: v for k, v in info.items() if k != "layer_bits"})
        if with_latency:
            lat = self.latency(config)
            result["seconds_per_image"] = lat["candidate"]
            result["baseline_seconds_per_image"] = lat["baseline"]
            result["speedup"] = lat["baseline"] / lat["candidate"]
        for k, v in result.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise TrialFailed(f"metric {k} is {v}")
        return result
