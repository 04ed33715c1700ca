"""`tuner study run|status|pareto|validate`: the study command group.

Every command validates the study TOML / config JSON first (one-line error, exit 2, nothing written)."""

from __future__ import annotations

import json
import sys

from tuner.commands.common import add_threads_option, check_out_file, clean, print_result
from tuner.commands.delete import register_delete
from tuner.commands.report import register_report
from tuner.commands.trials import register_trials
from tuner.progress import bars_enabled
from tuner.threads import check_threads

PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def register(sub) -> None:
    study = sub.add_parser("study", help="run, resume and inspect a search study (a TOML file, see studies/)",
                           description="A study is a TOML file (studies/default.toml is the main job); its trials "
                                       "live in the database the TOML names (default: <name>.db beside it).")
    ssub = study.add_subparsers(dest="study_command", required=True, metavar="COMMAND", title="commands")

    p = ssub.add_parser("run", help="create or resume the study; runs until it holds n_trials finished trials")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--n-trials", type=int, default=None, metavar="N",
                   help="finished trials the study should hold in total (default: the TOML's n_trials)")
    add_threads_option(p, "the TOML's [model] threads, else ")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar; one log line per trial on stderr instead")
    p.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="worker processes on this host (default 1); with CUDA, worker i uses GPU i mod #GPUs")
    p.set_defaults(func=run_study)

    p = ssub.add_parser("status", help="trials by state, budget spent, last Pareto snapshot")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=study_status)

    p = ssub.add_parser("pareto", help="the current Pareto front (feasible, completed trials)")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--json", action="store_true",
                   help="print the front as a JSON list: trial, objectives and a full config per member "
                        "(loadable with AccelConfig.from_dict, like an exported file)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help=f"also write a plot of the front ({', '.join(PLOT_SUFFIXES)})")
    p.set_defaults(func=study_pareto)

    register_validate(ssub)
    register_delete(ssub)
    register_report(ssub)
    register_trials(ssub)


def _spec(path):
    from tuner.study.spec import load_spec

    return load_spec(path)


def run_study(args) -> int:
    import dataclasses

    from tuner.study.runner import run_study as run

    spec = _spec(args.study).with_n_trials(args.n_trials)  # validated before any file is created
    check_threads(args.threads)
    if args.threads is not None:  # the runner sets them (tuner/threads.py); not part of the fingerprint
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, threads=args.threads))
    # bars on a terminal, one line per trial otherwise (logs, CI); --json keeps stdout for the summary
    progress = not args.no_progress and bars_enabled()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.workers != 1:
        from tuner.storage.workers import run_workers

        summary = run_workers(spec, args.workers, args.n_trials, progress=progress, log=log)
        for line in summary.get("dead_workers", []):  # the study finished without them: exit 0, say so
            log(line)
    else:
        summary = run(spec, progress=progress, log=log)
    print_result(summary, args.json)
    return 0


def study_status(args) -> int:
    from optuna.trial import TrialState

    from tuner.study.runner import open_study
    from tuner.storage.budget import count_slots
    from tuner.storage.database import read_snapshots

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
    print_result(out, args.json)
    return 0


def study_pareto(args) -> int:
    from tuner.study import pareto
    from tuner.study.runner import open_study

    spec = _spec(args.study)
    if args.plot:
        check_out_file(args.plot, "--plot", PLOT_SUFFIXES)  # before any work: a bad name costs nothing
    study, _ = open_study(spec, create=False)
    data = pareto.front(study, spec)
    if args.plot:
        pareto.plot_front(study, spec, args.plot)
    if args.json:
        print(json.dumps(clean(_with_full_configs(study, spec, data["members"]))))
        return 0
    print(f"study {spec.name}: {len(data['members'])} front members, {data['n_feasible']} feasible of "
          f"{data['n_finished']} finished; hypervolume {data['hypervolume']:.4f} (baseline-normalized)")
    base = data["baseline"]
    with_clip = any("clip_score" in m["objectives"] for m in data["members"])  # a user model with clip_model
    print(f"baseline: {base['seconds_per_image'] * 1000:.2f} ms/image, FID {base['fid']:.3f}"
          + (f", CLIP {base['clip_score']:.2f} (maximized)" if "clip_score" in base else ""))
    with_acc = not with_clip and any("class_accuracy" in m["objectives"] for m in data["members"])  # the proxy only
    print(f"{'trial':>5}  {'ms/image':>8}  {'speedup':>7}  {'FID':>8}  {'FID +%':>7}  {'upper':>7}  {'images':>6}  "
          f"{'certified':>11}  {'KID':>8}  " + (f"{'CLIP':>6}  " if with_clip else f"{'acc %':>5}  " if with_acc else "")
          + "config")
    nan = float("nan")
    for m in data["members"]:
        o = m["objectives"]
        methods = ", ".join(f"{k}({', '.join(f'{a}={_short(b)}' for a, b in v.items())})" for k, v in m["config"].items())
        last = (f"{o.get('clip_score', nan):6.2f}  " if with_clip
                else f"{100 * o.get('class_accuracy', nan):5.1f}  " if with_acc else "")
        print(f"{m['trial']:>5}  {o['seconds_per_image'] * 1000:8.2f}  {o.get('speedup', nan):6.2f}x  "
              f"{o['fid']:8.3f}  {o.get('fid_increase_pct', nan):+7.1f}  {o.get('fid_increase_pct_hi', nan):+7.1f}  "
              f"{o.get('n_images', 0):>6}  {m.get('certified') or '-':>11}  {o.get('kid', nan):8.4f}  {last}"
              f"{methods or 'baseline'}")
    for m in data["members"]:
        h = m.get("held_out")
        if h:  # what certification measured on held-out seeds: the numbers the certified status rests on
            print(f"trial {m['trial']} on held-out seeds: FID change {h['fid_increase_pct']:+.1f} % "
                  f"[{h['fid_increase_pct_lo']:+.1f}, {h['fid_increase_pct_hi']:+.1f}] at {h['n_images']} images, "
                  f"{h['speedup']:.2f}x")
    cert = data.get("certification")
    if cert:
        print(f"certification at +{cert['cap']:g} % on held-out seed {cert['seed']}: "
              f"{sum(v['status'] == 'feasible' for v in cert['trials'].values())} certified of "
              f"{len(cert['trials'])} candidates, {cert['spent_images']} of {cert['budget_images']} images"
              + (" (budget exhausted)" if cert.get("exhausted") else ""))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _with_full_configs(study, spec, members: list[dict]) -> list[dict]:
    """Each member's config as `tuner export --trial N` writes it (schema_version, model_id, methods,
    objectives, environment), so `AccelConfig.from_dict` / `tuner evaluate` take it as it is."""
    from tuner.study.export import trial_config

    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    return [{**m, "config": trial_config(study, spec, by_number[m["trial"]]).to_dict()} for m in members]


def _short(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return f"{{{len(v)} entries}}"
    if isinstance(v, list) and len(v) > 6:
        return f"[{len(v)} items]"
    return v


# --- `tuner study validate` (issue 12): the front re-measured on held-out seeds ----------------------
def register_validate(ssub) -> None:
    p = ssub.add_parser("validate", help="re-measure every front member on held-out seeds with more images")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--n-images", type=int, default=None, help="held-out images (default: 4x the study's)")
    p.add_argument("--seed", type=int, default=None, help="held-out proxy-set seed (default: the study's + 1)")
    p.add_argument("--max-fid-increase", type=float, default=None, metavar="X",
                   help="validate the front of the trials that could meet an X%% cap (point estimate <= X) and "
                        "judge them at X; then `tuner export --best --max-fid-increase X` uses these values")
    p.add_argument("--json", action="store_true", help="print the validation as one JSON object")
    p.set_defaults(func=study_validate)


def study_validate(args) -> int:
    from tuner.study.export import check_max_fid_increase
    from tuner.study.validate import held_out_image_set, run_validation

    spec = _spec(args.study)
    held_out_image_set(spec, args.n_images, args.seed)  # bad values: one line, before anything is opened
    cap = args.max_fid_increase
    check_max_fid_increase(cap)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    result = run_validation(spec, args.n_images, args.seed, progress=bars_enabled(), log=log,
                            max_fid_increase=cap)
    if args.json:
        print(json.dumps(clean(result)))
        return 0
    base = result["baseline"]
    cap = result["max_fid_increase"]
    print(f"study {spec.name}: {len(result['members'])} front members re-measured on {result['n_images']} images, "
          f"seed {result['seed']}; baseline FID {base['fid']:.3f}; feasible {result['n_feasible']}"
          f"{'' if cap is None else f' (FID increase upper bound <= {cap:g}%)'}")
    print(f"{'trial':>5}  {'ms/img':>8}  {'speedup':>7}  {'FID':>8}  {'fid_increase_pct':>16}  {'upper':>7}  feasible")
    for m in result["members"]:
        o = m["objectives"]
        if m.get("error"):
            print(f"{m['trial_number']:>5}  {'-':>8}  {'-':>7}  {'-':>8}  {'-':>16}  {'-':>7}  false ({m['error']})")
            continue
        print(f"{m['trial_number']:>5}  {o['seconds_per_image'] * 1000:8.2f}  {o['speedup']:7.2f}  {o['fid']:8.3f}  "
              f"{m['fid_increase_pct']:+16.1f}  {m['fid_increase_pct_hi']:+7.1f}  {str(m['feasible']).lower()}")
    return 0
