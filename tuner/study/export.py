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
from tuner.study.context import ENVIRONMENT_ATTR, MODEL_ATTR
from tuner.study.pareto import baseline_of, completed
from tuner.study.spec import METRIC_NAMES, StudySpec

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / f"accel_config.v{SCHEMA_VERSION}.json"
MEASURED_KEYS = ("kid", "psnr", "ssim", "class_accuracy", "speedup", "macs", "bitops", "fid_ratio",
                 "seconds_per_image_raw", "baseline_seconds_per_image")


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
    """Where the trial was measured: the study's stored machine (not the exporting one), its proxy set."""
    machine = study.user_attrs.get(ENVIRONMENT_ATTR) or {**machine_environment("cpu"), "device": spec.model.device or "unknown"}
    return {**machine, "study": spec.name, "trial": trial.number, "num_inference_steps": spec.proxy_set.steps,
            "proxy_set": {"n_images": spec.proxy_set.n_images, "steps": spec.proxy_set.steps,
                          "seed": spec.proxy_set.seed, "latency_images": spec.evaluator.latency_images},
            "feature_extractor": spec.evaluator.feature_extractor}


def pick_trial(study: optuna.Study, spec: StudySpec, number: int | None = None,
               max_fid_increase: float | None = None) -> optuna.trial.FrozenTrial:
    """Trial `number`, or the fastest completed trial with FID <= baseline x (1 + X/100) (X given, else
    the study's constraint: the fastest feasible trial)."""
    if number is not None:
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not trials:
            raise TunerError(f"study '{spec.name}' has no trial #{number}")
        t = trials[0]
        if t.state != TrialState.COMPLETE:
            reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason") or ""
            raise TunerError(f"trial #{number} is {t.state.name.lower()}, not complete" + (f" ({reason})" if reason else ""))
        return t
    if max_fid_increase is not None and not (0 <= max_fid_increase <= 10_000):
        raise TunerError(f"--max-fid-increase={max_fid_increase} is out of range (0..10000)")
    if max_fid_increase is None:
        candidates = completed(study, feasible_only=True)
        what = "feasible"
    else:
        cap = float(baseline_of(study)["fid"]) * (1 + max_fid_increase / 100)
        fid_at = spec.objectives.index("fid")
        candidates = [t for t in completed(study, feasible_only=False) if t.values[fid_at] <= cap]
        what = f"with FID <= {cap:.4g} (baseline +{max_fid_increase:g}%)"
    if not candidates:
        raise TunerError(f"study '{spec.name}' has no completed trial {what}")
    return min(candidates, key=lambda t: (t.values[0], t.number))


def trial_config(study: optuna.Study, spec: StudySpec, trial: optuna.trial.FrozenTrial) -> AccelConfig:
    methods = trial.user_attrs.get("config")
    if methods is None:
        raise TunerError(f"trial #{trial.number} has no stored config")
    objectives = {METRIC_NAMES[o]: float(v) for o, v in zip(spec.objectives, trial.values)}
    objectives.update({k: trial.user_attrs[k] for k in MEASURED_KEYS if isinstance(trial.user_attrs.get(k), (int, float))})
    objectives["fid"] = float(trial.values[spec.objectives.index("fid")])
    base = baseline_of(study)
    objectives["baseline_fid"] = float(base["fid"])
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
           max_fid_increase: float | None = None) -> tuple[AccelConfig, optuna.trial.FrozenTrial]:
    out = Path(out)
    if not out.parent.is_dir():
        raise TunerError(f"-o: folder {out.parent} does not exist")
    trial = pick_trial(study, spec, number, max_fid_increase)
    config = trial_config(study, spec, trial)
    validate_against_schema(config.to_dict())
    config.save(out)
    return config, trial
