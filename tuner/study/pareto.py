"""The study's front: completed, feasible trials that no other such trial dominates (moocore), its
hypervolume against a fixed reference point derived from the stored baseline, and a plot.

Hypervolume is computed on baseline-normalized objectives, all minimized, 1 = the baseline: latency /
baseline latency, FID as 1 + its change / 100 (the study's one scale, fid_scale.py), BitOPs / baseline BitOPs, and for the CLIP score (maximized) 1 plus
its relative loss, 2 - CLIP / baseline CLIP (linear like the others, finite at a score of 0). The
reference point is (1, 1 + X/100, 1, ..., 1 + CLIP_REF_DECREASE/100) — X the study's `max_fid_increase`,
100 when it has none — so nothing slower than the baseline, worse than the FID cap or losing more than
10 % of the baseline's CLIP score adds volume, and fronts of different studies on the same model compare
directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from tuner.errors import TunerError
from tuner.storage.keys import BASELINE_ATTR
from tuner.study.fid_scale import FidScale
from tuner.study.spec import MAXIMIZED, METRIC_NAMES, StudySpec

DEFAULT_FID_REF_INCREASE = 100.0  # percent, when the study has no FID constraint
# percent of the baseline's CLIP score a candidate may lose and still add volume: accelerations lower it a
# little, so a reference at the baseline itself (0 %) would leave most fronts without any volume
CLIP_REF_DECREASE = 10.0
BASELINE_KEYS = {"latency": "seconds_per_image", "fid": "fid", "bitops": "bitops", "memory": "memory_gb",
                 "clip_score": "clip_score"}


def is_feasible(trial: optuna.trial.FrozenTrial, certified: dict[int, str] | None = None) -> bool:
    """Within the study's constraints. Held-out certification (certify.py) decides over the search's
    own interval: a trial whose upper bound at 128 images straddled the cap but that 1,024 held-out
    images certified feasible is feasible, and one certified infeasible is not."""
    status = (certified or {}).get(trial.number)
    if status in ("feasible", "infeasible"):
        return status == "feasible"
    return all(v <= 0.0 for v in trial.constraints.values())


def certified_statuses(study: optuna.Study) -> dict[int, str]:
    """{trial number: certification status} of the study's last certification."""
    trials = (study.user_attrs.get(CERTIFICATION_ATTR) or {}).get("trials") or {}
    return {int(n): v.get("status") for n, v in trials.items()}


def completed(study: optuna.Study, feasible_only: bool = True) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    certified = certified_statuses(study) if feasible_only else None
    return [t for t in trials if not feasible_only or is_feasible(t, certified)]


def front_trials(trials: list[optuna.trial.FrozenTrial], maximise: bool | Sequence[bool] = False,
                 spec: StudySpec | None = None, baseline: dict | None = None) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated trials, by latency; `maximise`: per objective (`StudySpec.maximized`), or one for all.
    With the study's `spec` and `baseline`: dominance beyond the noise, one trial per executed work
    (noise_front.py), what every study output uses."""
    import moocore

    if not trials:
        return []
    if spec is not None and baseline is not None:
        from tuner.study.noise_front import noise_front

        return sorted(noise_front(trials, spec.objectives, spec.maximized, baseline), key=lambda t: t.values[0])
    points = np.array([t.values for t in trials], dtype=float)
    keep = moocore.is_nondominated(points, maximise=maximise, keep_weakly=False)
    return sorted([t for t, k in zip(trials, keep) if k], key=lambda t: t.values[0])


def baseline_of(study: optuna.Study) -> dict:
    base = study.user_attrs.get(BASELINE_ATTR)
    if not base:
        raise TunerError(f"study '{study.study_name}' has no stored baseline yet (run it first)")
    return base


def reference_point(spec: StudySpec, baseline: dict) -> tuple[np.ndarray, dict]:
    """(normalized reference point, the same in raw units keyed by objective)."""
    x = spec.constraints.max_fid_increase
    fid_ref = 1.0 + (DEFAULT_FID_REF_INCREASE if x is None else x) / 100.0
    norm = {"latency": 1.0, "fid": fid_ref, "bitops": 1.0, "memory": 1.0, "clip_score": 1.0 + CLIP_REF_DECREASE / 100.0}
    ref = np.array([norm[o] for o in spec.objectives])
    raw = {o: (2.0 - norm[o] if o in MAXIMIZED else norm[o]) * float(baseline[BASELINE_KEYS[o]]) for o in spec.objectives}
    return ref, raw


def normalized(spec: StudySpec, baseline: dict, values) -> np.ndarray:
    """Objective values (one row per trial) as the module docstring's minimized ratios to the baseline."""
    scale = np.array([float(baseline[BASELINE_KEYS[o]]) for o in spec.objectives])
    with np.errstate(divide="ignore", invalid="ignore"):  # a baseline CLIP score of 0: nan/inf, never inside
        ratio = np.asarray(values, dtype=float) / scale
    if "fid" in spec.objectives and len(ratio):  # FID: 1 + change/100, the study's one scale (fid_scale.py)
        at = spec.objectives.index("fid")
        ratio[:, at] = [FidScale.of(baseline).normalized(v) for v in np.asarray(values, dtype=float)[:, at]]
    return np.where(spec.maximized, 2.0 - ratio, ratio)


def hypervolume(spec: StudySpec, baseline: dict, trials: list[optuna.trial.FrozenTrial]) -> float:
    import moocore

    ref, _ = reference_point(spec, baseline)
    if not trials:
        return 0.0
    points = normalized(spec, baseline, [t.values for t in trials])
    inside = (points < ref).all(axis=1)
    return float(moocore.hypervolume(points[inside], ref=ref)) if inside.any() else 0.0


OBJECTIVE_UNITS = {"latency": "s/image", "bitops": "BitOPs/image", "memory": "GB"}  # FID has none


def objectives_line(spec: StudySpec, attrs: dict) -> str:
    """A completed trial's objectives with units, for logs: objective names as in the TOML,
    e.g. `latency 0.0412 s/image (1.80x), fid 5.180 (+12.3 %), clip_score 31.2 (-0.8 %, higher is better)`."""
    parts = []
    for name in spec.objectives:
        value = attrs.get(BASELINE_KEYS.get(name, name))
        if not isinstance(value, (int, float)):
            parts.append(f"{name} ?")
            continue
        text = f"{name} {value:.3f}" if name == "fid" else f"{name} {value:.4g}"
        if OBJECTIVE_UNITS.get(name):
            text += f" {OBJECTIVE_UNITS[name]}"
        speedup, change = attrs.get("speedup"), attrs.get("fid_increase_pct")
        if name == "latency" and isinstance(speedup, (int, float)):
            text += f" ({speedup:.2f}x)"
        if name == "fid" and isinstance(change, (int, float)):  # the study's one scale (fid_scale.py)
            hi, n = attrs.get("fid_increase_pct_hi"), attrs.get("n_images")
            upper = f", upper {hi:+.1f} %" if isinstance(hi, (int, float)) else ""
            text += f" ({change:+.1f} %{upper}" + (f", {n} images)" if n else ")")
        change = attrs.get("clip_score_change_pct")
        if name == "clip_score" and isinstance(change, (int, float)):
            text += f" ({change:+.1f} %, higher is better)"
        parts.append(text)
    return ", ".join(parts)


MEMBER_KEYS = ("kid", "psnr", "ssim", "class_accuracy", "clip_score", "memory_gb", "speedup", "speedup_lo",
               "speedup_hi", "macs", "bitops", "fid_increase_pct", "fid_increase_pct_lo", "fid_increase_pct_hi",
               "n_images")
CERTIFICATION_ATTR = "certification"  # study user attribute written by certify.py


def member(spec: StudySpec, t: optuna.trial.FrozenTrial, baseline: dict | None = None,
           certification: dict | None = None) -> dict:
    objectives = {METRIC_NAMES[o]: v for o, v in zip(spec.objectives, t.values)}
    for key in MEMBER_KEYS:
        if key in t.user_attrs:
            objectives.setdefault(key, t.user_attrs[key])
    if "fid" in spec.objectives and baseline is not None and "fid_increase_pct" not in objectives:
        objectives["fid_increase_pct"] = FidScale.of(baseline).change_of(objectives["fid"])  # stored before the scale
    cert = ((certification or {}).get("trials") or {}).get(str(t.number))
    return {"trial": t.number, "objectives": objectives, "config": t.user_attrs.get("config", {}),
            "certified": None if cert is None else cert.get("status"),
            "held_out": None if not cert or "fid_increase_pct" not in cert else {
                k: cert.get(k) for k in ("n_images", "fid_increase_pct", "fid_increase_pct_lo", "fid_increase_pct_hi",
                                         "speedup", "speedup_lo")}}


def front(study: optuna.Study, spec: StudySpec) -> dict:
    """The current front as plain data (what `tuner study pareto --json` prints)."""
    baseline = baseline_of(study)
    feasible = completed(study)
    members = front_trials(feasible, spec.maximized, spec, baseline)
    _, ref_raw = reference_point(spec, baseline)
    certification = study.user_attrs.get(CERTIFICATION_ATTR)
    return {"study": spec.name, "n_finished": len(study.get_trials(deepcopy=False, states=(
                TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))),
            "n_feasible": len(feasible),
            "baseline": {METRIC_NAMES[o]: baseline[BASELINE_KEYS[o]] for o in spec.objectives},
            "reference_point": {METRIC_NAMES[o]: v for o, v in ref_raw.items()},
            "hypervolume": hypervolume(spec, baseline, members),
            "members": [member(spec, t, baseline, certification) for t in members],
            "certification": certification}


def snapshot(study: optuna.Study, spec: StudySpec, engine) -> dict:
    """Write the current front to pareto_snapshots / pareto_members."""
    from tuner.storage.database import write_snapshot

    data = front(study, spec)
    write_snapshot(engine, spec.name, data["n_finished"], data["hypervolume"], data["reference_point"],
                   data["members"])
    return data


def plot_front(study: optuna.Study, spec: StudySpec, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise TunerError(f"--plot: folder {path.parent} does not exist")
    baseline = baseline_of(study)
    done, certified = completed(study, feasible_only=False), certified_statuses(study)
    feasible = [t for t in done if is_feasible(t, certified)]
    members = front_trials(feasible, spec.maximized, spec, baseline)
    ms = 1000.0  # plot milliseconds per image
    fig, ax = plt.subplots(figsize=(7, 5))
    infeasible = [t for t in done if not is_feasible(t, certified)]
    if infeasible:
        ax.scatter([t.values[0] * ms for t in infeasible], [t.values[1] for t in infeasible], c="lightgray",
                   s=18, label="infeasible")
    if feasible:
        ax.scatter([t.values[0] * ms for t in feasible], [t.values[1] for t in feasible], c="tab:blue", s=18,
                   alpha=0.6, label="feasible")
    if members:
        xs, ys = [t.values[0] * ms for t in members], [t.values[1] for t in members]
        ax.step(xs, ys, where="post", c="tab:red", lw=1.2)
        ax.scatter(xs, ys, c="tab:red", s=30, label="Pareto front", zorder=3)
        clip_at = spec.objectives.index("clip_score") if "clip_score" in spec.objectives else None
        for t, x, y in zip(members, xs, ys):  # a third objective is not on the axes: the CLIP score as a label
            label = f"#{t.number}" + ("" if clip_at is None else f" CLIP {t.values[clip_at]:.2f}")
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    bl, bf = float(baseline["seconds_per_image"]) * ms, FidScale.of(baseline).anchor
    ax.scatter([bl], [bf], marker="*", s=160, c="k", label="baseline", zorder=4)
    if spec.constraints.max_fid_increase is not None:
        cap = FidScale.of(baseline).cap_value(spec.constraints.max_fid_increase)
        ax.axhline(cap, color="k", ls=":", lw=0.8, label=f"FID cap (+{spec.constraints.max_fid_increase:g}%)")
    ax.set_xlabel("latency (ms / image, normalized to the stored baseline)")
    ax.set_ylabel("proxy FID" if spec.model.is_proxy else "FID (Inception space)")
    ax.set_title(f"study '{spec.name}': {len(members)} front members of {len(done)} completed trials, "
                 f"HV {hypervolume(spec, baseline, members):.4f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
