"""Export one trial of a study as a config JSON (schema tuner/schemas/accel_config.v2.json): the methods
it applied, the model id, its measured objectives and the environment it was measured in.
`tuner evaluate out.json` re-measures it; `tuner.apply(pipe, AccelConfig.load(out.json))` applies it."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tuner.config import SCHEMA_VERSION, AccelConfig
from tuner.errors import TunerError
from tuner.storage.keys import ENVIRONMENT_ATTR, MODEL_ATTR
from tuner.study.pareto import baseline_of, completed
from tuner.study.spec import METRIC_NAMES, StudySpec

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / f"accel_config.v{SCHEMA_VERSION}.json"
MEASURED_KEYS = ("kid", "psnr", "ssim", "class_accuracy", "clip_score", "memory_gb", "speedup", "macs", "bitops",
                 "fid_ratio", "seconds_per_image_raw", "baseline_seconds_per_image", "fid_lo", "fid_hi",
                 "fid_increase_pct", "fid_increase_pct_lo", "fid_increase_pct_hi", "speedup_lo", "speedup_hi")
VALIDATED_KEYS = ("fid_increase_pct", "fid_increase_pct_hi", "baseline_fid", "n_images", "seed")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine_environment(device) -> dict:
    """The machine and versions a study measures on (stored with the study when its context is built)."""
    import torch

    device = torch.device(device)
    return {"device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "torch": torch.__version__, "diffusers": _version("diffusers"), "optuna": _version("optuna"),
            "tuner": _version("tuner"), "python": platform.python_version(), "platform": platform.platform()}


def environment(study: optuna.Study, spec: StudySpec, trial: optuna.trial.FrozenTrial) -> dict:
    """Where the trial was measured: the study's stored machine (not the exporting one), its image set."""
    machine = study.user_attrs.get(ENVIRONMENT_ATTR) or {**machine_environment("cpu"), "device": spec.model.device or "unknown"}
    image_set = {"n_images": spec.image_set.n_images, "steps": spec.image_set.steps,
                 "seed": spec.image_set.seed, "latency_images": spec.evaluator.latency_images}
    if spec.image_set.prompts is not None:  # the prompts the images were made from, in order
        ps = spec.image_set
        image_set["prompts"] = [ps.prompts[i % len(ps.prompts)] for i in range(min(ps.n_images, len(ps.prompts)))]
    out = {**machine, "study": spec.name, "trial": trial.number, "num_inference_steps": spec.image_set.steps,
           "image_set": image_set, "feature_extractor": spec.evaluator.feature_extractor}
    if not spec.model.is_proxy:  # how to load the same model again (`tuner evaluate` / `tuner apply`)
        m = spec.model
        out["model"] = {k: v for k, v in (("id", m.id), ("dtype", m.dtype), ("scheduler", m.scheduler),
                                          ("guidance_scale", m.guidance_scale), ("resolution", m.resolution),
                                          ("batch_size", m.batch_size), ("unet_weights", m.unet_weights),
                                          ("solver", m.solver))
                        if v is not None}
        if spec.evaluator.reference_images is not None:
            out["reference_images"] = spec.evaluator.reference_images
        if spec.evaluator.inception_weights is not None:  # used by `tuner evaluate` when the file is still there
            out["inception_weights"] = spec.evaluator.inception_weights
    elif spec.model.solver is not None:  # the proxy's baseline solver, so `tuner evaluate` measures against it
        out["model"] = {"solver": spec.model.solver}
    return out


def fid_increase_upper(study: optuna.Study, spec: StudySpec, trial: optuna.trial.FrozenTrial,
                       validated: dict | None = None) -> float:
    """Upper bound of the trial's FID increase in percent: its held-out validation when there is one
    (inf when that failed), else the study's paired seed-split bound, else (a study stored before
    intervals existed) the point estimate."""
    v = (validated or {}).get(trial.number)
    if v is not None:
        return float("inf") if v.get("fid_increase_pct_hi") is None else float(v["fid_increase_pct_hi"])
    hi = trial.user_attrs.get("fid_increase_pct_hi")
    if isinstance(hi, (int, float)):
        return float(hi)
    return 100.0 * (float(trial.values[spec.objectives.index("fid")]) / float(baseline_of(study)["fid"]) - 1.0)


MAX_FID_INCREASE = 10_000.0  # percent; the same bound as [constraints] max_fid_increase


def check_max_fid_increase(value: float | None) -> None:
    """The --max-fid-increase flag of export and validate (None: not given; NaN is out of range)."""
    if value is not None and not (0 <= value <= MAX_FID_INCREASE):
        raise TunerError(f"--max-fid-increase={value} is out of range (0..10000)")


def pick_trial(study: optuna.Study, spec: StudySpec, number: int | None = None,
               max_fid_increase: float | None = None, validated: dict | None = None) -> optuna.trial.FrozenTrial:
    """Trial `number`, or the fastest completed trial whose FID increase is at most X percent *at its upper
    bound* (X given, else the study's constraint). `validated` (trial number -> newest row of
    `tuner study validate` or of the certification at the end of `study run`) takes precedence over the
    study's own scores, for the cap and the latency; trials that meet X on held-out seeds are preferred to
    trials that meet it only on the search's own."""
    if number is not None:
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not trials:
            raise TunerError(f"study '{spec.name}' has no trial #{number}")
        t = trials[0]
        if t.state != TrialState.COMPLETE:
            reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason") or ""
            raise TunerError(f"trial #{number} is {t.state.name.lower()}, not complete" + (f" ({reason})" if reason else ""))
        return t
    check_max_fid_increase(max_fid_increase)
    validated = validated or {}
    cap = spec.constraints.max_fid_increase if max_fid_increase is None else max_fid_increase
    # The baseline config (warm start measures it) meets every cap and accelerates nothing: never "best".
    done = [t for t in completed(study, feasible_only=False) if t.user_attrs.get("config")]
    if cap is None:
        candidates, what = done, ""
    else:
        candidates = [t for t in done if fid_increase_upper(study, spec, t, validated) <= cap]
        held_out = [t for t in candidates if t.number in validated]  # proved on held-out seeds: these first
        candidates = held_out or candidates
        what = f" with FID increase <= {cap:g}% (upper bound{', validated where available' if validated else ''})"
    if not candidates:
        hint = ""
        if done and cap is not None:  # say how far the cap is from what the noise allows
            lowest = min(done, key=lambda t: fid_increase_upper(study, spec, t, validated))
            best = fid_increase_upper(study, spec, lowest, validated)
            n = int((validated.get(lowest.number) or {}).get("n_images") or spec.image_set.n_images)
            more = "" if lowest.number not in validated else f" --n-images {4 * n}"
            hint = (f"; the lowest upper bound is {best:+.1f}% (trial {lowest.number}; at {n} images the interval is "
                    f"wide: `tuner study validate {spec.path.name if spec.path else 'STUDY.toml'} --max-fid-increase "
                    f"{cap:g}{more}` re-measures the candidates with more images)")
        raise TunerError(f"study '{spec.name}' has no completed accelerated trial{what}{hint}")

    def latency(t):
        v = validated.get(t.number)
        return float(v["objectives"].get("seconds_per_image", t.values[0])) if v and v.get("objectives") else t.values[0]

    return min(candidates, key=lambda t: (latency(t), t.number))


def trial_config(study: optuna.Study, spec: StudySpec, trial: optuna.trial.FrozenTrial,
                 validated: dict | None = None) -> AccelConfig:
    methods = trial.user_attrs.get("config")
    if methods is None:
        raise TunerError(f"trial #{trial.number} has no stored config")
    objectives = {METRIC_NAMES[o]: float(v) for o, v in zip(spec.objectives, trial.values)}
    objectives.update({k: trial.user_attrs[k] for k in MEASURED_KEYS if isinstance(trial.user_attrs.get(k), (int, float))})
    objectives["fid"] = float(trial.values[spec.objectives.index("fid")])
    base = baseline_of(study)
    objectives["baseline_fid"] = float(base["fid"])
    v = (validated or {}).get(trial.number)
    if v is not None:  # the held-out re-measurement, beside the study's scores
        objectives.update({f"validated_{k}": v[k] for k in VALIDATED_KEYS if isinstance(v.get(k), (int, float))})
        objectives.update({f"validated_{k}": x for k, x in v["objectives"].items() if isinstance(x, (int, float))})
    # a trial stored by round 1 holds a schema-1 methods table; migrating a schema-2 one changes nothing
    return AccelConfig.from_dict({"schema_version": 1, "model_id": study.user_attrs.get(MODEL_ATTR),
                                  "methods": methods, "objectives": objectives,
                                  "environment": environment(study, spec, trial)})


def validate_against_schema(data: dict) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    try:
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as e:
        where = "/".join(map(str, e.absolute_path)) or "(top)"
        raise TunerError(f"config does not match {SCHEMA_PATH.name} at {where}: {e.message}") from None


def export(study: optuna.Study, spec: StudySpec, out: str | Path, number: int | None = None,
           max_fid_increase: float | None = None, validated: dict | None = None) -> tuple[AccelConfig, optuna.trial.FrozenTrial]:
    out = Path(out)
    if not out.parent.is_dir():
        raise TunerError(f"-o: folder {out.parent} does not exist")
    trial = pick_trial(study, spec, number, max_fid_increase, validated)
    config = trial_config(study, spec, trial, validated)
    validate_against_schema(config.to_dict())
    config.save(out)
    return config, trial
