"""`tuner study run|status|pareto`, `tuner export`, `tuner apply`, `tuner dashboard`.

Every command validates the study TOML / config JSON first (one-line error, exit 2, nothing written)."""

from __future__ import annotations

import json
import sys

from tuner.commands.common import clean
from tuner.errors import TunerError


def register(sub) -> None:
    study = sub.add_parser("study", help="run, resume and inspect a search study (TOML in studies/)")
    ssub = study.add_subparsers(dest="study_command", required=True)

    p = ssub.add_parser("run", help="create or resume the study; runs until it holds n_trials finished trials")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--n-trials", type=int, default=None, help="total finished trials wanted (default: the TOML's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    p.set_defaults(func=run_study)

    p = ssub.add_parser("status", help="trials by state, budget, last snapshot")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=study_status)

    p = ssub.add_parser("pareto", help="the current Pareto front (feasible, completed trials)")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--json", action="store_true", help="print the front: members with objectives and config")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="also write a plot of the front")
    p.set_defaults(func=study_pareto)

    p = sub.add_parser("export", help="write one trial's config (or the best under a FID cap) as JSON")
    p.add_argument("study", help="study TOML file")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, default=None, help="trial number")
    which.add_argument("--best", action="store_true", help="the fastest trial within the FID cap")
    p.add_argument("--max-fid-increase", type=float, default=None,
                   help="with --best: FID at most this many percent over the baseline (default: the study's constraint)")
    p.add_argument("-o", "--out", required=True, help="output JSON file")
    p.set_defaults(func=run_export)

    p = sub.add_parser("apply", help="apply a config JSON to the model and save a grid of generated images")
    p.add_argument("config", help="config JSON (e.g. from `tuner export`)")
    p.add_argument("--out", required=True, help="output image file (PNG)")
    p.add_argument("--n-images", type=int, default=20, help="images in the grid (classes cycle 0..9)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the config's environment.num_inference_steps, else 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--unet-weights", default=None, help="proxy U-Net safetensors (default: the shipped file)")
    p.set_defaults(func=run_apply)

    p = sub.add_parser("dashboard", help="open optuna-dashboard on the study's storage")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=run_dashboard)


def _spec(path):
    from tuner.study.spec import load_spec

    return load_spec(path)


def run_study(args) -> int:
    from tuner.study.runner import run_study as run

    spec = _spec(args.study).with_n_trials(args.n_trials)  # validated before any file is created
    # bars on a terminal, one line per trial otherwise (logs, CI); --json keeps stdout for the summary
    progress = not args.no_progress and sys.stderr.isatty()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    summary = run(spec, progress=progress, log=log)
    if args.json:
        print(json.dumps(clean(summary)))
    else:
        for k, v in clean(summary).items():
            print(f"{k:<20} {v}")
    return 0


def study_status(args) -> int:
    from optuna.trial import TrialState

    from tuner.study.runner import open_study
    from tuner.study.storage import count_slots, read_snapshots

    spec = _spec(args.study)
    study, storage = open_study(spec, create=False)
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    fails = {}
    for t in trials:
        if t.state == TrialState.FAIL:
            r = t.user_attrs.get("fail_reason", "unknown")
            fails[r] = fails.get(r, 0) + 1
    snaps = read_snapshots(storage.engine, spec.name)
    out = {"study": spec.name, "storage": spec.storage, "n_trials_target": spec.n_trials,
           "budget_spent": count_slots(storage.engine, spec.name), "states": states, "fail_reasons": fails,
           "baseline": {k: v for k, v in (study.user_attrs.get("baseline") or {}).items()
                        if k in ("fid", "seconds_per_image")},
           "snapshots": len(snaps)}
    if snaps:
        out["last_snapshot"] = {k: snaps[-1][k] for k in ("created_at", "n_trials", "hypervolume")}
        out["last_snapshot"]["front_size"] = len(snaps[-1]["members"])
    if args.json:
        print(json.dumps(clean(out)))
    else:
        for k, v in clean(out).items():
            print(f"{k:<16} {v}")
    return 0


def study_pareto(args) -> int:
    from tuner.study import pareto
    from tuner.study.runner import open_study

    spec = _spec(args.study)
    study, _ = open_study(spec, create=False)
    data = pareto.front(study, spec)
    if args.plot:
        pareto.plot_front(study, spec, args.plot)
    if args.json:
        print(json.dumps(clean(data["members"])))
        return 0
    print(f"study {spec.name}: {len(data['members'])} front members, {data['n_feasible']} feasible of "
          f"{data['n_finished']} finished; hypervolume {data['hypervolume']:.4f}")
    base = data["baseline"]
    print(f"baseline: {base['seconds_per_image'] * 1000:.2f} ms/image, FID {base['fid']:.3f}")
    print(f"{'trial':>5}  {'ms/img':>8}  {'speedup':>7}  {'FID':>8}  {'KID':>8}  {'acc':>5}  config")
    for m in data["members"]:
        o = m["objectives"]
        methods = ", ".join(f"{k}({', '.join(f'{a}={_short(b)}' for a, b in v.items())})" for k, v in m["config"].items())
        print(f"{m['trial']:>5}  {o['seconds_per_image'] * 1000:8.2f}  {o.get('speedup', float('nan')):7.2f}  "
              f"{o['fid']:8.3f}  {o.get('kid', float('nan')):8.4f}  {o.get('class_accuracy', float('nan')):5.2f}  "
              f"{methods or 'baseline'}")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _short(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return f"{{{len(v)} entries}}"
    if isinstance(v, list) and len(v) > 6:
        return f"[{len(v)} items]"
    return v


def run_export(args) -> int:
    from tuner.study.export import export
    from tuner.study.runner import open_study

    if args.max_fid_increase is not None and not args.best:
        raise TunerError("--max-fid-increase goes with --best")
    spec = _spec(args.study)
    study, _ = open_study(spec, create=False)
    config, trial = export(study, spec, args.out, args.trial, args.max_fid_increase)
    o = config.objectives
    print(f"trial #{trial.number}: {o['seconds_per_image'] * 1000:.2f} ms/image, FID {o['fid']:.3f} -> {args.out}")
    return 0


def run_apply(args) -> int:
    from pathlib import Path

    from tuner.config import AccelConfig

    config = AccelConfig.load(args.config)  # corrupt or unknown content: one line, exit 2, nothing written
    out = Path(args.out)
    if not out.parent.is_dir():
        raise TunerError(f"--out: folder {out.parent} does not exist")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise TunerError(f"--out={out.name}: write a .png or .jpg grid")
    if not 1 <= args.n_images <= 1024:
        raise TunerError(f"--n-images={args.n_images} is out of range (1..1024)")
    steps = args.steps or int((config.environment or {}).get("num_inference_steps", 50))
    if not 1 <= steps <= 1000:
        raise TunerError(f"--steps={steps} is out of range (1..1000)")
    from tuner.apply_config import apply
    from tuner.proxy.model import MODEL_ID, load_proxy_pipeline

    if config.model_id not in (None, MODEL_ID):
        raise TunerError(f"config is for model '{config.model_id}'; `tuner apply` generates with {MODEL_ID}")
    pipe = load_proxy_pipeline(args.device, args.unet_weights)
    classes = [i % 10 for i in range(args.n_images)]
    seeds = [args.seed * 1_000_003 + i for i in range(args.n_images)]
    with apply(pipe, config):
        images = pipe(classes, seeds, num_inference_steps=steps, progress=sys.stderr.isatty())
    from torchvision.utils import save_image

    save_image(images, str(out), nrow=10, padding=1)
    print(f"{args.n_images} images ({config.describe()}, {steps} steps) -> {out}")
    return 0


def run_dashboard(args) -> int:
    import os
    import shutil

    spec = _spec(args.study)
    from tuner.study.storage import study_exists

    if not study_exists(spec.storage, spec.name):
        raise TunerError(f"study '{spec.name}' does not exist in {spec.storage} (run `tuner study run` first)")
    exe = shutil.which("optuna-dashboard")
    if exe is None:
        raise TunerError("optuna-dashboard is not installed (pip install optuna-dashboard)")
    os.execv(exe, [exe, spec.storage, "--port", str(args.port), "--host", args.host])
    return 0  # not reached
