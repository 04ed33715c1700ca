"""Default-study check of issue 12: which front members stay feasible on held-out seeds, with the FID cap
judged on the point estimate (before issue 12) and on the upper bound of the paired interval (after).

Reads the study, forms both fronts (point-feasible and upper-bound-feasible trials), then reads the
held-out re-measurements that `tuner study validate` stored, and re-measures members it did not cover (the
point-only front) on the same held-out set. Prints one markdown table and both `export --best` picks.

    tuner study validate studies/default.toml            # 4x images, seed + 1
    nice -n 10 python benchmarks/default_study_check.py studies/default.toml --max-fid-increase 10
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument("--max-fid-increase", type=float, default=10.0, help="the export cap to check")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from tuner.config import AccelConfig
    from tuner.study.export import pick_trial
    from tuner.study.pareto import baseline_of, completed, front_trials
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec
    from tuner.study.validate import held_out_image_set
    from tuner.storage.validation_table import latest_validations
    from tuner.uncertainty import increase_pct

    spec = load_spec(args.study)
    study, storage = open_study(spec, create=False)
    cap = spec.constraints.max_fid_increase
    base_fid = float(baseline_of(study)["fid"])
    done = completed(study, feasible_only=False)
    fid_at = spec.objectives.index("fid")
    point = {t.number: 100 * (t.values[fid_at] / base_fid - 1) for t in done}
    upper = {t.number: t.user_attrs.get("fid_increase_pct_hi", point[t.number]) for t in done}
    front_point = {t.number for t in front_trials([t for t in done if point[t.number] <= cap])}
    front_upper = {t.number for t in front_trials([t for t in done if upper[t.number] <= cap])}
    before = min((t for t in done if point[t.number] <= args.max_fid_increase), key=lambda t: (t.values[0], t.number))
    after = pick_trial(study, spec, max_fid_increase=args.max_fid_increase)
    validated = latest_validations(storage.engine, spec.name)
    need = (front_point | front_upper | {before.number, after.number}) - set(validated)
    extra = {}
    if need:
        from tuner.scoring import ScoringContext
        from tuner.proxy.model import load_proxy_pipeline

        ps = held_out_image_set(spec)
        ev = spec.evaluator
        ctx = ScoringContext(load_proxy_pipeline("cpu"), ps, ev.feature_extractor, latency_images=ev.latency_images,
                          latency_repeats=ev.latency_repeats)
        hb = float(ctx.evaluate_baseline()["fid"])
        trials = {t.number: t for t in done}
        for n in sorted(need):
            r = ctx.evaluate(AccelConfig.from_dict({"schema_version": 1, "methods": trials[n].user_attrs["config"]}))
            extra[n] = {"fid_increase_pct": increase_pct(r["fid_delta"], hb),
                        "fid_increase_pct_hi": increase_pct(r["fid_delta_hi"], hb), "speedup": r["speedup"]}
    held = {n: {"fid_increase_pct": v["fid_increase_pct"], "fid_increase_pct_hi": v["fid_increase_pct_hi"],
                "speedup": (v["objectives"] or {}).get("speedup")} for n, v in validated.items()}
    held.update(extra)
    print(f"cap {cap:g} %; front by point estimate: {sorted(front_point)}; front by upper bound: {sorted(front_upper)}")
    print("| trial | front (point / upper) | study: FID change, upper bound, speedup | held-out: FID change, "
          "upper bound, speedup | held-out within cap (point / upper) |")
    print("|---|---|---|---|---|")
    trials = {t.number: t for t in done}
    for n in sorted(front_point | front_upper | {before.number, after.number}):
        h = held.get(n)
        t = trials[n]
        fronts = f"{'yes' if n in front_point else 'no'} / {'yes' if n in front_upper else 'no'}"
        study_s = f"{point[n]:+.1f} %, {upper[n]:+.1f} %, {t.user_attrs.get('speedup', float('nan')):.2f}x"
        if h is None or h["fid_increase_pct"] is None:
            print(f"| {n} | {fronts} | {study_s} | not measured | |")
            continue
        print(f"| {n} | {fronts} | {study_s} | {h['fid_increase_pct']:+.1f} %, {h['fid_increase_pct_hi']:+.1f} %, "
              f"{h['speedup']:.2f}x | {h['fid_increase_pct'] <= cap} / {h['fid_increase_pct_hi'] <= cap} |")
    for label, t in (("before (point estimate)", before), ("after (upper bound)", after)):
        h = held.get(t.number) or {}
        print(f"export --best --max-fid-increase {args.max_fid_increase:g}, {label}: trial {t.number} "
              f"(study {point[t.number]:+.1f} %, upper {upper[t.number]:+.1f} %; held-out "
              f"{h.get('fid_increase_pct', float('nan')):+.1f} %)")


if __name__ == "__main__":
    main()
