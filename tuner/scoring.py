"""Scoring one AccelConfig against the un-accelerated baseline, with everything that does not depend on
the candidate (baseline images and latency, reference features, extractor) computed once per context.

Used by `tuner baseline`, `tuner evaluate` and every study trial, on any model of `tuner.models`.

Quality on a user's model needs no dataset: FID/KID are computed in Inception space against the baseline
model's own images for the same prompts and seeds (or against `reference_images`, a folder, when given).
The baseline's FID against itself is 0, so what the study stores as the baseline's `fid` (the scale its
ratios, FID cap and hypervolume use) is the seed-noise floor: the FID between the baseline set and a
second baseline set drawn with other seeds. A candidate below it changes the images less than drawing new
noise does.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import torch

from tuner.evaluators.cost import bitops, count_macs
from tuner.evaluators.fidelity import InceptionFeatures, ReferenceFeatures, class_accuracy, fid_kid, frechet_distance_of_features
from tuner.evaluators.latency import blocked_medians, interleaved_medians, time_once
from tuner.evaluators.memory import PeakMemory
from tuner.evaluators.pairwise import pairwise
from tuner.apply_config import apply
from tuner.config import AccelConfig
from tuner.models.compile import is_compiled_model, uncompiled
from tuner.errors import TrialFailed, TunerError
from tuner.uncertainty import MIN_IMAGES, fid_interval, speedup_interval
from tuner.proxy.classifier import ClassifierFeatures, load_classifier
from tuner.proxy.data import DATASET_ID, IMAGE_SIZE, NUM_CLASSES, load_digits_split


@dataclass(frozen=True)
class ImageSet:
    """The images every candidate generates: balanced classes (proxy) or prompts cycled in order (text
    models), one fixed seed per image."""

    n_images: int = 64
    steps: int = 50
    seed: int = 0
    prompts: tuple[str, ...] | None = None  # None: digit classes (the proxy)

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
        if self.prompts is not None:
            if not self.prompts or not all(isinstance(p, str) and p for p in self.prompts):
                raise TunerError("prompts must be a non-empty list of non-empty strings")
            object.__setattr__(self, "prompts", tuple(self.prompts))

    @property
    def classes(self) -> list[int]:
        return [i % NUM_CLASSES for i in range(self.n_images)]

    @property
    def conditions(self) -> list:
        """What image i is generated from: prompt i mod len(prompts), or its digit class."""
        if self.prompts is None:
            return self.classes
        return [self.prompts[i % len(self.prompts)] for i in range(self.n_images)]

    @property
    def seeds(self) -> list[int]:
        return [self.seed * 1_000_003 + i for i in range(self.n_images)]

    def subset(self, n: int) -> "ImageSet":
        """The first n images (n >= 1: a timed batch may be a single image; FID needs the full set's >= 2)."""
        out = ImageSet(max(2, min(n, self.n_images)), self.steps, self.seed, self.prompts)
        object.__setattr__(out, "n_images", max(1, min(n, self.n_images)))
        return out

    def reseeded(self, seed: int) -> "ImageSet":
        return ImageSet(self.n_images, self.steps, seed, self.prompts)


SEED_FLOOR_MIN = 1e-6  # an FID between two sets of different noise below this: the features see no difference


def check_seed_floor(fid: float, weights: str | None) -> float:
    """The seed-noise floor, or a one-line TunerError when it is degenerate: ~0 (the extractor maps every
    image to nearly the same features, e.g. Inception weights with a wrong init) or NaN/Inf. Every FID
    change of the study is a ratio to it, so such a floor would make any config look perfect or broken."""
    if not math.isfinite(fid) or fid < SEED_FLOOR_MIN:
        where = f" ({weights})" if weights else ""
        raise TunerError(f"the feature extractor{where} cannot tell images apart: the baseline's FID against itself "
                         f"with other seeds is {fid:.3g} (expected > {SEED_FLOOR_MIN:g}); check the Inception weights file")
    return fid


@dataclass
class ScoringContext:
    pipe: object  # a model of tuner.models (tuner.pipeline.ProxyPipeline, tuner.models.DiffusersModel)
    image_set: ImageSet = field(default_factory=ImageSet)
    extractor_name: str = "proxy"  # proxy | inception (a user model always uses inception)
    inception_weights: str | None = None
    latency_images: int = 8  # batch timed for latency (interleaved with the baseline)
    latency_repeats: int = 3
    progress: bool = False
    reference_images: str | None = None  # folder: FID against it instead of the default reference
    clip_model: str | None = None  # local CLIP folder: adds `clip_score` (text models)

    def __post_init__(self):
        if self.extractor_name not in ("proxy", "inception"):
            raise TunerError(f"unknown feature extractor '{self.extractor_name}' (proxy or inception)")
        self.kind = getattr(self.pipe, "kind", "proxy")
        self.target = getattr(self.pipe, "target", self.pipe)  # what tuner.apply patches
        if self.kind == "proxy":
            self.classifier = load_classifier()
            self.extractor = (ClassifierFeatures(self.classifier) if self.extractor_name == "proxy"
                              else InceptionFeatures(self.inception_weights))
        else:
            if self.image_set.prompts is None:
                raise TunerError(f"model {getattr(self.pipe, 'model_id', '?')} is text-conditioned: the image set needs prompts")
            self.extractor_name = "inception"  # the digit classifier means nothing on a user's images
            self.classifier = None
            self.extractor = InceptionFeatures(self.inception_weights, allow_download=True)
            if torch.device(self.pipe.device).type == "cuda":  # features where the images are made
                self.extractor.to(self.pipe.device)
        if self.reference_images is not None:
            from tuner.evaluators.reference_images import image_files, load_images

            folder, size = str(self.reference_images), int(getattr(self.pipe, "resolution", IMAGE_SIZE))
            files = image_files(folder)
            listing = repr((str(Path(folder).resolve()), [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]))
            key = f"folder-{hashlib.sha256(listing.encode()).hexdigest()[:16]}"
            self.reference = ReferenceFeatures(self.extractor, key, size, lambda: load_images(folder, size))
        elif self.kind == "proxy":
            self.reference = ReferenceFeatures(self.extractor, DATASET_ID, IMAGE_SIZE,
                                               lambda: load_digits_split("heldout")[0])
        else:
            self.reference = None  # the baseline's own images
        self.clip = None
        if self.clip_model is not None:
            from tuner.evaluators.clip_score import ClipScorer

            if self.image_set.prompts is None:
                raise TunerError("evaluator.clip_model: a CLIP score needs prompts (a text-to-image model)")
            self.clip = ClipScorer(self.clip_model)

    @property
    def fid_reference(self) -> str:
        if self.reference_images is not None:
            return str(self.reference_images)
        return DATASET_ID if self.kind == "proxy" else "baseline images (same prompts and seeds)"

    # --- computed once ---------------------------------------------------------------------------
    def generate(self, image_set: ImageSet | None = None) -> torch.Tensor:
        ps = image_set or self.image_set
        return self.pipe(ps.conditions, ps.seeds, num_inference_steps=ps.steps, progress=self.progress)

    @cached_property
    def baseline_images(self) -> torch.Tensor:
        return self.generate()

    def baseline_subset(self, n: int) -> torch.Tensor:
        return self.baseline_images[:n]

    def baseline_features(self, n: int | None = None) -> torch.Tensor:
        """Features of the baseline set's first n images (all when None), each image extracted once per
        context: every trial pairs its images with these. The race grows the baseline set past the
        study's (tuner.study.race), and only the new images are then extracted."""
        images = self.baseline_images
        want = len(images) if n is None else min(n, len(images))
        have = self.__dict__.get("_baseline_features")
        if have is None or len(have) < want:
            start = 0 if have is None else len(have)
            with torch.no_grad():
                more = self.extractor(images[start:].float()).double().cpu()
            have = more if have is None else torch.cat([have, more])
            self.__dict__["_baseline_features"] = have
            self.baseline_feature_extractions = getattr(self, "baseline_feature_extractions", 0) + 1
        return have[:want]

    def reference_features(self) -> torch.Tensor:
        """FID's reference: `reference_images`, else the baseline's own images at the study's set size
        (not the larger set a race may have grown)."""
        if self.reference is not None:
            return self.reference.features()
        return self.baseline_features(self.image_set.n_images)

    @cached_property
    def real_vs_real_fid(self) -> float:
        """FID of N real training images against the held-out reference: the floor at this N."""
        train, _ = load_digits_split("train")
        n = min(self.image_set.n_images, len(train))
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
        with torch.no_grad():
            feats = self.extractor(train[idx]).double()
        return frechet_distance_of_features(feats, self.reference.features(), self.extractor)

    @cached_property
    def seed_floor_fid(self) -> float:
        """FID between the baseline set and a second baseline set drawn with other seeds (same prompts):
        what changing only the noise does, the scale of a user model's FID-to-baseline."""
        other = self.generate(self.image_set.reseeded((self.image_set.seed + 1) % 2**31))
        return float(fid_kid(other, self.extractor, self.reference_features())["fid"])

    # --- per candidate ---------------------------------------------------------------------------
    def quality(self, images: torch.Tensor, image_set: ImageSet | None = None) -> dict:
        ps = image_set or self.image_set
        if not torch.isfinite(images).all():
            raise TrialFailed("generated images contain NaN or Inf")
        out = fid_kid(images, self.extractor, self.reference_features())
        if self.classifier is not None:
            out["class_accuracy"] = class_accuracy(images, torch.tensor(ps.classes), self.classifier)
        out.update(pairwise(images, self.baseline_subset(len(images))))
        if self.clip is not None:
            out["clip_score"] = self.clip(images, ps.conditions)
        return out

    def generate_and_count(self, image_set: ImageSet | None = None, layer_bits=None) -> tuple[torch.Tensor, dict]:
        """One generation that also counts MACs/BitOPs per image (hooks see what really runs)."""
        ps = image_set or self.image_set
        box = {}
        with PeakMemory(self.pipe.device) as peak, uncompiled(self.pipe):  # counting hooks need the plain U-Net
            macs = count_macs(self.pipe.unet, lambda: box.setdefault("images", self.generate(ps)))
        total_macs = sum(macs.values())
        cost = {"macs": total_macs / ps.n_images, "bitops": bitops(macs, layer_bits) / ps.n_images}
        if peak.gb is not None:
            cost["memory_gb"] = peak.gb
        return box["images"], cost

    def latency(self, config: AccelConfig | None = None, repeats: int | None = None, warmup: int = 1) -> dict:
        """Seconds per image of the baseline and (if given) the candidate, timed interleaved in this
        run. The config is applied before and removed after each candidate call, outside the timing."""
        ps = self.image_set.subset(self.latency_images)

        def run():
            self.pipe(ps.conditions, ps.seeds, num_inference_steps=ps.steps)

        fns = {"baseline": run, **({"candidate": run} if config is not None else {})}
        peaks = {name: PeakMemory(self.pipe.device) for name in fns}  # over the timed generations

        def context(name):
            stack = ExitStack()
            stack.enter_context(peaks[name])
            if name == "candidate":
                stack.enter_context(apply(self.target, config))
            return stack

        rounds: dict[str, list[float]] = {}
        timing = blocked_medians if is_compiled_model(self.pipe) else interleaved_medians  # see blocked_medians
        med = timing(fns, repeats or self.latency_repeats, warmup=warmup, device=self.pipe.device,
                     contexts={name: partial(context, name) for name in fns}, samples=rounds)
        self.last_latency_rounds = rounds  # every timed call, for the speedup's interval
        self.last_latency_memory = {name: p.gb for name, p in peaks.items()}  # None off CUDA
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
        self.__dict__.pop("_baseline_features", None)  # features of an earlier set are stale
        q = self.quality(images)
        out = {"n_images": self.image_set.n_images, "steps": self.image_set.steps,
               "seconds_per_image": self.latency(warmup=0)["baseline"],  # the generation just run warmed up
               "generation_seconds": generation, **q, **cost, "feature_extractor": self.extractor_name,
               "fid_reference": self.fid_reference, "model_id": getattr(self.pipe, "model_id", "custom")}
        if self.kind == "proxy" and self.reference_images is None:
            out["real_vs_real_fid"] = self.real_vs_real_fid
        if self.reference is None:  # FID against the baseline itself: its scale is the seed-noise floor
            out["fid_to_itself"] = out["fid"]
            out["fid"] = out["fid_seed_floor"] = check_seed_floor(self.seed_floor_fid, self.inception_weights)
        return out

    def fid_interval(self, images: torch.Tensor) -> dict:
        """Paired seed-split interval of the FID and of its change from the baseline (same seeds, same n)."""
        with torch.no_grad():
            cand = self.extractor(images.float()).double().cpu()
        return fid_interval(cand, self.baseline_features(len(images)), self.reference_features())

    def evaluate(self, config: AccelConfig, image_set: ImageSet | None = None, with_latency: bool = True) -> dict:
        """Scores `config` on the image set; the pipeline is restored afterwards."""
        ps = image_set or self.image_set
        self.baseline_images  # make sure the baseline exists before the candidate touches the model
        handle = apply(self.target, config)
        try:
            info = dict(handle.info)
            images, cost = self.generate_and_count(ps, info.get("layer_bits"))
        except torch.cuda.OutOfMemoryError:
            raise TrialFailed("out of memory") from None
        finally:
            handle.remove()
        result = {**self.quality(images, ps), **cost, "n_images": ps.n_images}
        if len(images) >= MIN_IMAGES:  # smaller sets (a cheap-reject subset) get no interval
            result.update(self.fid_interval(images))
        result.update({k: v for k, v in info.items() if k != "layer_bits"})
        if with_latency:
            lat = self.latency(config)
            result["seconds_per_image"] = lat["candidate"]
            result["baseline_seconds_per_image"] = lat["baseline"]
            result["speedup"] = lat["baseline"] / lat["candidate"]
            if self.last_latency_memory.get("candidate") is not None:  # the timed generations' peak
                result["memory_gb"] = self.last_latency_memory["candidate"]
            result.update(speedup_interval(self.last_latency_rounds["baseline"], self.last_latency_rounds["candidate"]))
        for k, v in result.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise TrialFailed(f"metric {k} is {v}")
        return result
