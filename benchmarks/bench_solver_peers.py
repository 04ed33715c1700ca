"""Solvers users already run, as peers: "DPM-Solver++ 2M at k steps" and "UniPC at k steps" on held-out seeds,
against both baselines (DDIM-20, the papers' one, and DPM-Solver++ 2M-20, what users run), optionally beside
a study's front measured on the same seeds.

    python benchmarks/bench_solver_peers.py --n-images 256                # measure (resumable: per-row features)
    python benchmarks/bench_solver_peers.py --front-from studies/default.toml   # + the study's front configs
    python benchmarks/bench_solver_peers.py --write                        # BENCHMARKS.md section from the JSON

Held-out seeds: the image set of seed 4242 (seeds 4242·1,000,003 + i; the default study uses seed 0).
Speedup is the MACs ratio (U-Net MACs per image, counted by hooks: solvers-only rows are 20/k); FID is the
proxy FID against the held-out digits; "FID change" and its upper bound are the paired half-split interval of
tuner.uncertainty.fid_interval (90 % two-sided, so the upper bound holds at 95 % one-sided), candidate and
baseline from the same seeds. A front member "dominates" a row when it is at least as fast and its FID
change upper bound is below the row's FID change lower bound (the intervals separate).
Results: benchmarks/results/solver_peers.json (features cached in solver_peers_features.pt).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

RESULTS = Path(__file__).resolve().parent / "results"
SECTION = "## Solvers users already run (issue 17)"
HELD_OUT_SEED = 4242
COUNTS = (4, 5, 6, 8, 10, 12, 15)
BASELINES = {"DDIM 20": {"solver": {"name": "ddim"}},
             "DPM-Solver++ 2M 20": {"solver": {"name": "dpmsolver++", "order": 2}}}


def peer_rows(counts) -> dict[str, dict]:
    rows = {}
    for name, label in (("dpmsolver++", "DPM-Solver++ 2M"), ("unipc", "UniPC")):
        for k in counts:
            rows[f"{label} {k}"] = {"solver": {"name": name, "order": 2}, "timesteps": {"count": k}}
    return rows


def front_rows(study_toml: str) -> dict[str, dict]:
    """The study's feasible front members, by trial number, as configs."""
    import optuna

    from tuner.study.pareto import baseline_of, completed, front_trials
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(study_toml)
    study, _ = open_study(spec, create=False)
    members = front_trials(completed(study), spec.maximized, spec, baseline_of(study))  # what `study pareto` shows
    return {f"front #{t.number}": t.user_attrs["config"] for t in members if t.user_attrs.get("config")}


def measure(rows: dict[str, dict], n_images: int, steps: int, cache: Path) -> dict:
    """Features and MACs per image of every row (cached by name and n_images)."""
    from tuner.evaluators.cost import count_macs
    from tuner.apply_config import apply
    from tuner.config import AccelConfig
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.proxy.model import load_proxy_pipeline

    torch.set_num_threads(1)
    store = torch.load(cache, weights_only=True) if cache.is_file() else {}
    pipe = load_proxy_pipeline("cpu")
    pipe.batch_size = 64  # images are independent (one generator each): the batch changes speed only
    ps = ImageSet(n_images, steps, HELD_OUT_SEED)
    ctx = ScoringContext(pipe, ps, "proxy")
    store.setdefault("reference", ctx.reference_features().double())
    for name, methods in rows.items():
        key = f"{name}@{n_images}"
        if key in store:
            continue
        cfg = AccelConfig.from_dict({"schema_version": 2, "methods": methods})
        with apply(pipe, cfg):
            macs = sum(count_macs(pipe.unet, lambda: pipe([0], [0], num_inference_steps=steps)).values())
            images = pipe(ps.conditions, ps.seeds, num_inference_steps=steps)
        store[key] = {"features": ctx.extractor(images.float()).double(), "macs": macs, "config": methods}
        torch.save(store, cache)
        print(f"{name}: {macs / 1e6:.1f} MMACs/image", file=sys.stderr)
    return store


def compare(store: dict, names: list[str], n_images: int) -> dict:
    from tuner.uncertainty import Frechet, fid_interval

    ref = store["reference"]
    out = {"n_images": n_images, "held_out_seed": HELD_OUT_SEED, "baselines": {}, "rows": {}}
    frechet = Frechet(ref)
    for b in BASELINES:
        fb = store[f"{b}@{n_images}"]
        out["baselines"][b] = {"fid": float(frechet(fb["features"][None])[0]), "macs": fb["macs"]}
    for name in names:
        r = store[f"{name}@{n_images}"]
        row = {"config": r["config"], "macs": r["macs"]}
        for b in BASELINES:
            fb = store[f"{b}@{n_images}"]
            ci = fid_interval(r["features"], fb["features"], ref)
            base_fid = out["baselines"][b]["fid"]
            row[b] = {"speedup": fb["macs"] / r["macs"], "fid": ci["fid_delta"] + base_fid,
                      "change": 100 * ci["fid_delta"] / base_fid, "change_lo": 100 * ci["fid_delta_lo"] / base_fid,
                      "change_hi": 100 * ci["fid_delta_hi"] / base_fid}
        out["rows"][name] = row
    return out


def dominators(result: dict, name: str, baseline: str) -> list[str]:
    row = result["rows"][name][baseline]
    return [f for f, r in result["rows"].items() if f.startswith("front #")
            and r[baseline]["speedup"] >= row["speedup"] and r[baseline]["change_hi"] < row["change_lo"]]


def write_md(result: dict, command: str) -> None:
    lines = [SECTION, "",
             f"The solvers a user swaps in first, on {result['n_images']} held-out proxy images (image set seed "
             f"{result['held_out_seed']}, which no study uses), against both baselines on the same seeds. Speedup = "
             "U-Net MACs ratio (counted; 20/k for a solver alone); FID change = paired difference in % of the "
             "baseline's FID with its 90 % half-split interval (upper bound = 95 % one-sided). Command:", "",
             f"    {command}", "    python benchmarks/bench_solver_peers.py --write", "",
             "| baseline | proxy FID | MMACs/image |", "|---|---|---|"]
    for b, v in result["baselines"].items():
        lines.append(f"| {b} | {v['fid']:.2f} | {v['macs'] / 1e6:.1f} |")
    lines += ["", "| row | vs DDIM 20: speedup | FID change | upper bound | vs DPM-Solver++ 2M 20: speedup | "
              "FID change | upper bound | dominated by |", "|---|---|---|---|---|---|---|---|"]
    has_front = any(n.startswith("front #") for n in result["rows"])
    for name, r in result["rows"].items():
        cells = []
        for b in BASELINES:
            c = r[b]
            cells += [f"{c['speedup']:.2f}x", f"{c['change']:+.1f} %", f"{c['change_hi']:+.1f} %"]
        dom = ", ".join(dominators(result, name, "DPM-Solver++ 2M 20")) if has_front and not name.startswith("front") \
            else ("" if has_front else "(no front given)")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {dom or ('none' if has_front else '')} |")
    lines += ["", "Fastest row certified at a cap (FID change upper bound <= cap), per baseline:", "",
              "| cap | vs DDIM 20 | vs DPM-Solver++ 2M 20 |", "|---|---|---|"]
    for cap in (10.0, 15.0, 25.0, 50.0):
        cells = []
        for b in BASELINES:
            ok = [(r[b]["speedup"], n) for n, r in result["rows"].items() if r[b]["change_hi"] <= cap]
            best = max(s for s, _ in ok) if ok else None
            cells.append(", ".join(n for s, n in ok if s == best) + f" ({best:.2f}x)" if ok else "none")
        lines.append(f"| +{cap:.0f} % | " + " | ".join(cells) + " |")
    write_section(SECTION, "\n".join(lines + ["", *NOTES, ""]))


NOTES = [
    "Reading: against DDIM-20 a solver swap alone gives 3-5x at no FID cost; against the strong baseline "
    "(DPM-Solver++ 2M 20, which the proxy's studies now use: `[model] solver`) the same rows cost FID, and "
    "a tight cap needs more images (the intervals above are half-split, paired). The study's front joins this "
    "table with `--front-from STUDY.toml` (front members measured on the same held-out seeds; \"dominated by\" "
    "then names the members at least as fast whose FID interval lies wholly below the row's). The merged "
    "default study's one front member (trial 35, DPM-Solver++ 3M at 10 steps, certified at +10 % on 1,024 "
    "held-out images on the study's scale) is the row `front #35`: at the same 2x it has the lowest FID change "
    "of the 10-step rows here, but its interval overlaps UniPC 10's, so no row is dominated beyond the noise.",
    "",
    "512 images, not 1,024: generation ran at ~0.05 s per image-step on the shared CPU (whole run ~30 min). "
    "An FID moves with the image set (DDIM 20: 4.61 on the first 256 of these seeds, 5.19 on 512), which is "
    "why rows are compared paired, on the same seeds, to a baseline at the same N. The issue's 1,024-image figures agree within "
    "these intervals (e.g. UniPC 10 vs DPM-Solver++ 2M 20: +8.9 % there, +7.6 % [upper +19.8 %] here). On "
    "this evidence DPM-Solver++ 2M 20 (FID 2.84 vs DDIM's 5.19) is the proxy's baseline; UniPC at 20 steps "
    "was not measured. Images are batched 64 at a time (DDIM 20's at 32, from a first run): one generator "
    "per image, so the batch changes float rounding only.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-images", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20, help="the baselines' step count")
    ap.add_argument("--counts", type=int, nargs="+", default=list(COUNTS))
    ap.add_argument("--front-from", help="a study TOML whose finished run's front joins the table")
    ap.add_argument("--write", action="store_true", help="write BENCHMARKS.md from the saved results")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "solver_peers.json"
    if args.write:
        saved = json.loads(path.read_text())
        write_md(saved["result"], saved["command"])
        return
    rows = {**BASELINES, **peer_rows(args.counts)}
    if args.front_from:
        rows.update(front_rows(args.front_from))
    store = measure(rows, args.n_images, args.steps, RESULTS / "solver_peers_features.pt")
    result = compare(store, [n for n in rows if n not in BASELINES], args.n_images)
    command = "python benchmarks/bench_solver_peers.py " + " ".join(sys.argv[1:])
    path.write_text(json.dumps({"command": command, "result": result}, indent=2))
    print(json.dumps(result["baselines"], indent=2))


if __name__ == "__main__":
    main()
