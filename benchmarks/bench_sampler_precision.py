"""Sampler and precision methods on the proxy model: TMPQ-style timestep groupings, per-layer
quantization, and DDPM with Li & Yan's σ* vs the baseline coefficients.

    flock /tmp/bench.lock python benchmarks/bench_sampler_precision.py --part timesteps --counts 10 25
    flock /tmp/bench.lock python benchmarks/bench_sampler_precision.py --part timesteps --counts 50
    flock /tmp/bench.lock python benchmarks/bench_sampler_precision.py --part quant
    flock /tmp/bench.lock python benchmarks/bench_sampler_precision.py --part ddpm
    python benchmarks/bench_sampler_precision.py --write      # renders BENCHMARKS.md sections

Every part scores configs with `ScoringContext(load_proxy_pipeline('cpu'), ImageSet(32, 50, 0))` (FID/KID in
the proxy classifier's feature space vs held-out digits, PSNR/SSIM vs the 50-step DDIM baseline with the
same seeds, MACs/BitOPs counted by hooks) and times each candidate interleaved with the baseline in the
same run. Parts append to a results file (--results) so each run stays short; --write renders them.

Timestep search: for each count G, TMPQ-DM's quadratic groups (tuner.methods.timesteps.tmpq_group_edges)
and one timestep per group. Candidates: group starts, group middles, and --random random groupings,
ranked by FID on a separate search set (32 images, seed 1); only the winner is scored on the main set,
so its figures are not inflated by the selection.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "sampler_precision.json"  # kept: --write re-renders it
SECTION_TS = "## Timesteps and quantization (TMPQ-style)"
SECTION_LY = "## Li & Yan coefficients"
KEEP = ("fid", "kid", "kid_std", "psnr", "ssim", "class_accuracy", "macs", "bitops", "speedup",
        "seconds_per_image", "baseline_seconds_per_image", "real_kernel_layers", "simulated_layers")


def _config(methods: dict):
    from tuner.config import AccelConfig

    return AccelConfig.from_dict({"schema_version": 2, "methods": methods})


def _slim(result: dict) -> dict:
    out = {k: result[k] for k in KEEP if k in result}
    for k in ("real_kernel_layers", "simulated_layers"):
        if k in out:
            out[k] = len(out[k])  # counts in the table; names are in the handle
    return out


def _context():
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.proxy.model import load_proxy_pipeline

    torch.manual_seed(0)
    ctx = ScoringContext(load_proxy_pipeline("cpu"), ImageSet(32, 50, 0))
    ctx.reference.features()
    return ctx


def _baseline(ctx) -> dict:
    res = ctx.evaluate_baseline()
    return {k: res[k] for k in ("fid", "kid", "kid_std", "class_accuracy", "macs", "bitops", "seconds_per_image")}


def _search_fid(ctx, timesteps: list[int]) -> float:
    """FID of a timestep list on the search set (seed 1), without touching the main set."""
    from tuner.evaluators.fidelity import fid_kid
    from tuner.apply_config import apply
    from tuner.scoring import ImageSet

    ps = ImageSet(32, len(timesteps), seed=1)
    with apply(ctx.pipe, _config({"timesteps": {"timesteps": timesteps}})):
        images = ctx.pipe(ps.classes, ps.seeds)
    return fid_kid(images, ctx.extractor, ctx.reference.features())["fid"]


def part_timesteps(ctx, counts, n_random: int) -> dict:
    from tuner.methods.timesteps import group_sizes, grouping_to_timesteps, tmpq_group_edges, uniform_timesteps

    rng = random.Random(0)
    out = {}
    for g in counts:
        edges = tmpq_group_edges(1000, g)
        sizes = group_sizes(edges)
        cands = {"group starts": [0] * g, "group middles": [s // 2 for s in sizes]}
        for i in range(n_random):
            cands[f"random {i}"] = [rng.randrange(s) for s in sizes]
        uniform = uniform_timesteps(g)
        search = {"uniform": _search_fid(ctx, uniform)}
        for name, choice in cands.items():
            search[name] = _search_fid(ctx, grouping_to_timesteps(choice, edges))
        best = min(cands, key=lambda n: search[n])
        best_ts = grouping_to_timesteps(cands[best], edges)
        out[str(g)] = {
            "tried": len(cands),
            "search_fid": search,
            "best": best,
            "best_timesteps": best_ts,
            "uniform": _slim(ctx.evaluate(_config({"timesteps": {"timesteps": uniform}}))),
            "tmpq": _slim(ctx.evaluate(_config({"timesteps": {"timesteps": best_ts}}))),
        }
        print(f"[timesteps] G={g}: uniform {out[str(g)]['uniform']['fid']:.2f}, best grouping ({best}) "
              f"{out[str(g)]['tmpq']['fid']:.2f}", flush=True)
    return out


def part_quant(ctx) -> dict:
    from tuner.apply_config import apply
    from tuner.methods import quant
    from tuner.methods.quant import quantizable_layers

    modules = dict(ctx.pipe.unet.named_modules())
    linear_only = {n: {"w": 8, "a": 8} for n in quantizable_layers(ctx.pipe.unet)
                   if isinstance(modules[n], torch.nn.Linear)}
    t0 = time.perf_counter()
    quant.calibrate(ctx.pipe)  # once, on the baseline trajectory; every config below reuses it
    calib_s = time.perf_counter() - t0
    configs = {
        "W8A8 (Linear: real int8, Conv: simulated)": {"weight_bits": 8, "act_bits": 8},
        "W8A8 all simulated": {"weight_bits": 8, "act_bits": 8, "real_kernels": False},
        "W6A6": {"weight_bits": 6, "act_bits": 6},
        "W4A8": {"weight_bits": 4, "act_bits": 8},
        "W8A8 on Linear layers only (all real int8)": {"per_layer": linear_only},
    }
    out = {"calibration_seconds": calib_s, "calibration_runs": quant.calibration_runs, "configs": {}}
    for name, cfg in configs.items():
        with apply(ctx.pipe, _config({"quant": cfg})) as h:
            all_real = not h.info["simulated_layers"] and bool(h.info["real_kernel_layers"])
        res = _slim(ctx.evaluate(_config({"quant": cfg}), with_latency=all_real))
        res["speedup_is_real"] = all_real
        out["configs"][name] = res
        print(f"[quant] {name}: FID {res['fid']:.2f}, BitOPs {res['bitops']:.3g}", flush=True)
    out["calibration_runs_after"] = quant.calibration_runs
    # the same low-bit configs with plain absmax ranges (one range for every bit-width), for comparison
    quant.calibrate(ctx.pipe, method="max")
    out["max_configs"] = {}
    for name in ("W6A6", "W4A8"):
        res = _slim(ctx.evaluate(_config({"quant": configs[name]}), with_latency=False))
        out["max_configs"][name + " (absmax ranges)"] = res
        print(f"[quant] {name} absmax: FID {res['fid']:.2f}", flush=True)
    return out


def part_ddpm(ctx) -> dict:
    from tuner.methods.timesteps import uniform_timesteps

    out = {}
    for steps in (50, 100):
        for name in ("ddim", "ddpm-baseline", "ddpm-liyan"):
            methods = {"timesteps": {"timesteps": uniform_timesteps(steps)}}
            if name != "ddim":
                methods["solver"] = {"name": "ddpm", "coefficients": name.split("-")[1]}
            out[f"{name} {steps}"] = _slim(ctx.evaluate(_config(methods), with_latency=False))
            print(f"[ddpm] {name} {steps}: FID {out[f'{name} {steps}']['fid']:.2f}", flush=True)
    return out


# --- rendering -------------------------------------------------------------------------------------
def _f(v, spec=".2f"):
    if v is None:
        return "—"
    if isinstance(v, float) and v == float("inf"):
        return "∞"
    return format(v, spec)


def render(results: dict) -> tuple[str, str]:
    base = results.get("baseline", {})
    lines = [SECTION_TS, ""]
    lines.append("Proxy model, `ScoringContext(load_proxy_pipeline('cpu'), ImageSet(32, 50, 0))`: 32 images, FID/KID "
                 "in the proxy classifier's feature space vs held-out digits, PSNR/SSIM vs the 50-step DDIM "
                 "baseline with the same seeds, MACs/BitOPs per image counted by hooks, speedup = baseline/candidate "
                 "median seconds timed interleaved in the same run. At N=32 FID differences below ~1 are noise.")
    if base:
        lines.append(f"Baseline (DDIM 50 uniform, fp32): FID {_f(base['fid'])}, KID {_f(base['kid'], '.1f')}, "
                     f"class accuracy {_f(base['class_accuracy'])}, {_f(base['macs'] / 1e9)} GMACs, "
                     f"{_f(base['bitops'] / 1e12)} TBitOPs per image.")
    ts = results.get("timesteps", {})
    if ts:
        lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in results.get("commands", {}).get("timesteps", [])), "",
                  "| steps | list | FID | KID | PSNR | SSIM | class acc. | MACs vs 50 | speedup |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for g in sorted(ts, key=int):
            r = ts[g]
            for label, m in (("uniform (DDIM leading)", r["uniform"]), (f"best TMPQ grouping ({r['best']})", r["tmpq"])):
                lines.append(f"| {g} | {label} | {_f(m['fid'])} | {_f(m['kid'], '.1f')} | {_f(m['psnr'])} | "
                             f"{_f(m['ssim'], '.3f')} | {_f(m['class_accuracy'])} | {_f(m['macs'] / base['macs'] if base else None, '.3f')} | "
                             f"{_f(m.get('speedup'))}× |")
        lines += ["", "Search (FID on a separate 32-image search set, seed 1; only the winner is scored above):"]
        for g in sorted(ts, key=int):
            r = ts[g]
            s = r["search_fid"]
            grp = sorted((v for k, v in s.items() if k != "uniform"))
            lines.append(f"- {g} steps: {r['tried']} groupings tried (group starts, group middles, "
                         f"{r['tried'] - 2} random); uniform {s['uniform']:.2f}, groupings {grp[0]:.2f} (best, "
                         f"'{r['best']}') .. {grp[-1]:.2f}; best list {r['best_timesteps'][:6]}…{r['best_timesteps'][-4:]}")
    q = results.get("quant")
    if q:
        lines += ["", "Command: " + "; ".join(f"`{c}`" for c in results.get("commands", {}).get("quant", [])), "",
                  f"Calibration: once, {q['calibration_seconds']:.1f} s (10 images × 50 DDIM steps, seeds 900000+), "
                  f"reused by all {len(q['configs'])} configs (calibration counter {q['calibration_runs']} → "
                  f"{q['calibration_runs_after']}). Ranges: per-channel weights, per-tensor activations, clipping "
                  "range per bit-width by least squared error on the calibration statistics ('mse', default); the "
                  "'(absmax ranges)' rows use one absmax range for every bit-width (a second calibration, "
                  "`calibrate(pipe, method='max')`).", "",
                  "| config | FID | KID | PSNR | SSIM | class acc. | BitOPs vs 32/32 | real int8 layers | simulated layers | speedup |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in list(q["configs"].items()) + list(q.get("max_configs", {}).items()):
            sp = f"{_f(m.get('speedup'))}×" if m.get("speedup_is_real") else "— (simulated layers: not a speedup)"
            lines.append(f"| {name} | {_f(m['fid'])} | {_f(m['kid'], '.1f')} | {_f(m['psnr'])} | {_f(m['ssim'], '.3f')} | "
                         f"{_f(m['class_accuracy'])} | {_f(m['bitops'] / base['bitops'] if base else None, '.3f')} | "
                         f"{m['real_kernel_layers']} | {m['simulated_layers']} | {sp} |")
    if results.get("notes_ts"):
        lines += ["", "Reading these numbers:"] + [f"- {n}" for n in results["notes_ts"]]
    ly = [SECTION_LY, ""]
    if results.get("liyan_table"):
        ly += ["Command: `python benchmarks/liyan_check.py` (add `--json` for rows). Exact closed form, no sampling: "
               "data N(0, I_8) in R^d, exact score, β_t = (1000/T)·linspace(1e-4, 0.02, T), variance of the reverse "
               "chain propagated per coordinate, KL(q_1 ‖ p_1) with q_1 the forward marginal at t=1.", "",
               results["liyan_table"]]
    dd = results.get("ddpm")
    if dd:
        ly += ["", "On the proxy model (command: " + "; ".join(f"`{c}`" for c in results.get("commands", {}).get("ddpm", []))
               + "), 32 images; PSNR/SSIM are against the 50-step DDIM baseline, so for the stochastic DDPM samplers "
               "they measure distance from the deterministic trajectory, not quality:", "",
               "| sampler | steps | FID | KID | PSNR | SSIM | class acc. |", "|---|---|---|---|---|---|---|"]
        for key, m in dd.items():
            name, steps = key.rsplit(" ", 1)
            ly.append(f"| {name} | {steps} | {_f(m['fid'])} | {_f(m['kid'], '.1f')} | {_f(m['psnr'])} | "
                      f"{_f(m['ssim'], '.3f')} | {_f(m['class_accuracy'])} |")
    if results.get("notes_ly"):
        ly += ["", "Reading these numbers:"] + [f"- {n}" for n in results["notes_ly"]]
    return "\n".join(lines), "\n".join(ly)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["timesteps", "quant", "ddpm"], action="append", default=[])
    ap.add_argument("--counts", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--random", type=int, default=6, help="random groupings per count (plus 2 fixed ones)")
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--write", action="store_true", help="render the results file into BENCHMARKS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    import sys
    command = "python benchmarks/bench_sampler_precision.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.part:
        ctx = _context()
        results["baseline"] = _baseline(ctx)
        for part in args.part:
            if part == "timesteps":
                results.setdefault("timesteps", {}).update(part_timesteps(ctx, args.counts, args.random))
            elif part == "quant":
                results["quant"] = part_quant(ctx)
            elif part == "ddpm":
                results["ddpm"] = part_ddpm(ctx)
            cmds = results.setdefault("commands", {}).setdefault(part, [])
            if command not in cmds:
                cmds.append(command)
        args.results.write_text(json.dumps(results, indent=1))
    if args.write:
        missing = [part for part in ("timesteps", "quant", "ddpm") if not results.get(part)]
        if missing:  # rendering without them would wipe measured tables from BENCHMARKS.md
            raise SystemExit(f"{args.results} has no results for {', '.join(missing)}: run --part first")
        import importlib.util

        spec = importlib.util.spec_from_file_location("liyan_check", Path(__file__).with_name("liyan_check.py"))
        lc = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lc)
        results["liyan_table"] = lc.format_table(lc.table())
        ts_md, ly_md = render(results)
        write_section(SECTION_TS, ts_md)
        write_section(SECTION_LY, ly_md)
        print(ts_md + "\n\n" + ly_md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
