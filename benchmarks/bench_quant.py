"""Quantization on held-out seeds against the DPM-Solver++ 2M 20 baseline: tuner's W8 / W8A8 / W4A8 and a
sensitivity-guided mixed config, beside optimum-quanto's qint8 W8A8 (and torchao int8 dynamic on CUDA only).

    python benchmarks/bench_quant.py --rows main --cache main          # with PYTHONPATH=/work/main: today's rows
    python benchmarks/bench_quant.py --rows tuner quanto               # this branch's rows + the peer
    python benchmarks/bench_quant.py --rows torchao --cache cuda       # on CUDA: torchao int8 dynamic W8A8
    python benchmarks/bench_quant.py --write                           # BENCHMARKS.md section from the JSON

Held-out seeds: the image set of seed 4242 (no study uses it), the proxy's 20 steps, DPM-Solver++ 2M (the
proxy's baseline since issue 17). Every row is calibrated the same way: tuner's default calibration (10
images of seeds 900,000+, one per digit, 50 baseline steps); optimum-quanto's `Calibration` context runs on
exactly those images. FID change is the paired half-split interval of tuner.uncertainty.fid_interval (90 %
two-sided), PSNR is against the baseline's images from the same seeds (pixel range [-1, 1], peak 2).
BitOPs ratio = BitOPs / the float model's (MACs x b_w x b_a over every counted op; attention matmuls stay
32/32). Features and images per row are cached (resumable) in benchmarks/results/quant_<cache>.pt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

RESULTS = Path(__file__).resolve().parent / "results"
SECTION = "## Quantization that keeps quality (issue 23)"
HELD_OUT_SEED = 4242
STEPS = 20
BASELINE = "DPM-Solver++ 2M 20 (float)"
UNIFORM = {"W8": {"weight_bits": 8}, "W8A8": {"weight_bits": 8, "act_bits": 8},
           "W4A8": {"weight_bits": 4, "act_bits": 8}}


def tuner_rows(prefix: str, mixed: Path | None) -> dict[str, dict]:
    rows = {f"{prefix}{k}": {"quant": v} for k, v in UNIFORM.items()}
    if mixed is not None:
        for name, cfg in json.loads(mixed.read_text()).items():
            rows[f"{prefix}{name}"] = cfg
    return rows


def _pipe(device: str = "cpu"):
    from tuner.proxy.model import load_proxy_pipeline

    pipe = load_proxy_pipeline(device)
    pipe.batch_size = 64  # one generator per image: the batch changes speed only
    return pipe


def _float_macs(pipe) -> dict[str, int]:
    from tuner.evaluators.cost import count_macs

    return count_macs(pipe.unet, lambda: pipe([0], [0], num_inference_steps=STEPS))


def _record(store, cache, key, ctx, images, bitops_ratio, config, extra=None):
    store[key] = {"features": ctx.extractor(images.float()).double(), "images": images.float(),
                  "bitops_ratio": bitops_ratio, "config": config, **(extra or {})}
    torch.save(store, cache)
    print(f"{key}: BitOPs ratio {bitops_ratio:.3f}", file=sys.stderr, flush=True)


def measure_tuner(rows: dict[str, dict], n: int, cache: Path, device: str = "cpu") -> None:
    from tuner.evaluators.cost import bitops
    from tuner.apply_config import apply
    from tuner.config import AccelConfig
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.methods.quant import calibrate

    store = torch.load(cache, weights_only=False) if cache.is_file() else {}
    pipe = _pipe(device)
    ps = ImageSet(n, STEPS, HELD_OUT_SEED)
    ctx = ScoringContext(pipe, ps, "proxy")
    store.setdefault("reference", ctx.reference_features().double().cpu())
    macs = _float_macs(pipe)
    if f"{BASELINE}@{n}" not in store:
        _record(store, cache, f"{BASELINE}@{n}", ctx, pipe(ps.conditions, ps.seeds, num_inference_steps=STEPS), 1.0, {})
    calibrate(pipe)  # the default calibration a study runs, once for every row
    for name, methods in rows.items():
        if f"{name}@{n}" in store:
            continue
        cfg = AccelConfig.from_dict({"schema_version": 2, "methods": methods})
        with apply(pipe, cfg) as h:
            layer_bits = h.info["layer_bits"]
            images = pipe(ps.conditions, ps.seeds, num_inference_steps=STEPS)
        _record(store, cache, f"{name}@{n}", ctx, images, bitops(macs, layer_bits) / bitops(macs), methods)


def measure_quanto(n: int, cache: Path) -> None:
    """optimum-quanto qint8 weights and activations, its own Calibration on tuner's calibration images."""
    from optimum.quanto import Calibration, freeze, qint8, quantize

    from tuner.evaluators.cost import bitops
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.methods import quant

    store = torch.load(cache, weights_only=False) if cache.is_file() else {}
    key = f"optimum-quanto W8A8@{n}"
    if key in store:
        return
    pipe = _pipe()
    ps = ImageSet(n, STEPS, HELD_OUT_SEED)
    ctx = ScoringContext(pipe, ps, "proxy")
    store.setdefault("reference", ctx.reference_features().double())
    macs = _float_macs(pipe)
    quantize(pipe.unet, weights=qint8, activations=qint8)
    classes = [i % 10 for i in range(quant.DEFAULT_CALIBRATION_IMAGES)]
    seeds = [quant.DEFAULT_CALIBRATION_SEED + i for i in range(len(classes))]
    with torch.no_grad(), Calibration():
        pipe(classes, seeds, num_inference_steps=50)
    freeze(pipe.unet)
    replaced = {name for name, m in pipe.unet.named_modules() if type(m).__module__.startswith("optimum.quanto")}
    layer_bits = {name: (8, 8) for name in macs if name in replaced}
    images = pipe(ps.conditions, ps.seeds, num_inference_steps=STEPS)
    _record(store, cache, key, ctx, images, bitops(macs, layer_bits) / bitops(macs),
            {"optimum-quanto": "qint8 weights + qint8 activations, Calibration on the 10 calibration images"},
            {"quantized_layers": len(layer_bits)})


def compare(stores: list[dict], n: int) -> dict:
    from tuner.uncertainty import Frechet, fid_interval

    store = {k: v for s in stores for k, v in s.items()}
    ref, base = store["reference"], store[f"{BASELINE}@{n}"]
    base_fid = float(Frechet(ref)(base["features"][None])[0])
    out = {"n_images": n, "held_out_seed": HELD_OUT_SEED, "baseline_fid": base_fid, "rows": {}}
    for key, r in store.items():
        if not key.endswith(f"@{n}") or key == f"{BASELINE}@{n}":
            continue
        ci = fid_interval(r["features"], base["features"], ref)
        mse = (r["images"] - base["images"]).pow(2).mean()
        out["rows"][key[: -len(f"@{n}")]] = {
            "fid": base_fid + ci["fid_delta"], "change": 100 * ci["fid_delta"] / base_fid,
            "change_lo": 100 * ci["fid_delta_lo"] / base_fid, "change_hi": 100 * ci["fid_delta_hi"] / base_fid,
            "psnr": float(10 * torch.log10(4 / mse)), "bitops_ratio": r["bitops_ratio"], "config": r["config"]}
    return out


def write_md(result: dict, commands: list[str]) -> None:
    lines = [SECTION, "",
             f"{result['n_images']} held-out proxy images (image set seed {result['held_out_seed']}), {STEPS} steps of "
             f"DPM-Solver++ 2M; baseline FID {result['baseline_fid']:.2f}. FID change = paired difference in % "
             "of the baseline's FID with its 90 % half-split interval; PSNR against the baseline's images from "
             "the same seeds. Rows `main:` are today's quantizer (main before this branch) in the same run. "
             "Commands:", "", *[f"    {c}" for c in commands], "",
             "| row | FID | FID change | interval | PSNR | BitOPs ratio |", "|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['fid']:.2f} | {r['change']:+.1f} % | [{r['change_lo']:+.1f}, "
                     f"{r['change_hi']:+.1f}] | {r['psnr']:.1f} dB | {r['bitops_ratio']:.3f} |")
    write_section(SECTION, "\n".join(lines + ["", *NOTES, ""]))


FULL_STUDY = (
    "The full study on this branch (`studies/full.toml`: latency + FID + BitOPs, cap +100 %, quant genes per "
    "block with `separate_act = true, act_bits = [8, 32]`), fresh database, run as `tuner study run "
    "studies/full.toml` stopped after 8 trials (SIGINT) and resumed with `--n-trials 30` because the shared "
    "machine ran at load 8-11 (80 trials would not have finished before the deadline; latency was measured "
    "under that load): 30 trials (20 feasible by `study pareto`); 14 quantized trials completed, "
    "12 of them with FID under the cap (the warm start's W8A8 seed, trial 7: FID +4.5 %, BitOPs 0.239 of the "
    "baseline's; its greedy mixed seeds at average weight bits 6 and 5, trials 14 and 9: +2.6 % and +13.4 % at 64 images). `tuner study pareto studies/full.toml` shows one front member, trial 18: "
    "UniPC 12 steps with per-block bits (up_blocks.2 W4A8, time_embedding W6/A32, down_blocks.1 W8/A32, every "
    "other block W8A8, conv_in/conv_out float as the sensitivity bound keeps them), 1.23x, FID 3.81 "
    "(-20.3 %, upper +45.8 % at 64 images), BitOPs 0.147 of the baseline's. The study's own held-out "
    "certification (512-image budget) spent its budget on trial 26 (undecided) and did not reach trial 18; "
    "the row `full study front #18` above is trial 18's config on this benchmark's 256 held-out seeds "
    "(its BitOPs ratio column is per U-Net call; with 12 of 20 steps it is the study's 0.147): FID change "
    "-23.1 % [-69.0, +22.8] against DPM-Solver++ 2M 20, so its upper bound is below the study's +100 % cap "
    "on held-out seeds (and below +25 %); PSNR is low (28.5 dB) because another solver at 12 steps draws "
    "other images from the same noise."
)

NOTES = [
    "Reading: against the DPM-Solver++ 2M 20 baseline on these seeds, today's W8A8 (one activation range "
    "per layer for every timestep, MSE-clipped) is +6.7 % [-4.3, +17.6] at 40.9 dB; with ranges per "
    "timestep group (16 TMPQ-DM groups), absmax ranges at 8 bits and split shortcut halves it is -0.5 % "
    "[-6.2, +5.1] at 43.6 dB, BitOPs 0.237 of float (attention matmuls stay 32/32). The issue's +33 % was "
    "measured against the DDIM 20 baseline (another trajectory, other seeds); against the proxy's current "
    "baseline the same quantizer gives the `main:` rows above, so the before/after here is one run.",
    "",
    "Mixed precision: `mixed seed 1` is the study's warm-start seed at average weight bits 6 (greedy over "
    "per-layer sensitivity, blocks as genes, conv_in/conv_out kept float by the sensitivity bound, every "
    "other input at 8 bits): average weight bits 5.96, +5.4 % [-2.6, +13.4], 46.1 dB. Pushing to 4.70 "
    "average bits costs +18.1 % [+2.0, +34.2]. Uniform W4A8 is still broken (+817 %): 4-bit weights need "
    "the reconstruction (BRECQ/AdaRound) this training-free quantizer does not do, so 4 bits only pay in "
    "the least sensitive blocks. The sensitivity behind the mixed rows was measured with 8 recorded U-Net "
    "calls (the study measures 4).",
    "",
    "optimum-quanto (0.2.7, qint8 weights and activations on all 133 Conv2d/Linear layers, its "
    "`Calibration` over the same 10 calibration images x 50 steps, then `freeze`): FID 2.66, -8.0 % but with "
    "an interval of [-80, +64] (the paired half-split FID differences disagree widely), and PSNR 31.9 dB, 12 dB below tuner's W8A8. On FID alone the two W8A8 rows are "
    "not separable at 256 images; on closeness to the float model tuner's is clearly ahead. Both have the "
    "same BitOPs. torchao's int8 dynamic quantization is a CUDA-only row of this benchmark (not run: no GPU "
    "here; on CPU it was measured in \"Real low-bit kernels\"). On this CPU every quantized row runs at float "
    "speed or slower (fake quantization costs float time plus the quantize-dequantize), so only BitOPs, "
    "not latency, is claimed.",
    "",
    "What each part gives (PSNR only, 32 images of seeds 4,242,000+, 20 steps, an ad-hoc script not in the "
    "repository; A8 on every layer, weights float): MSE-clipped ranges 41.1 dB with one range per layer, "
    "39.1 / 38.3 / 37.3 dB with 4 / 8 / 16 timestep groups (likely because the clip search over fewer samples cuts rare "
    "large inputs); absmax ranges 38.2 dB with one range, 42.3 / 42.6 / 44.2 / 44.7 dB with 4 / 8 / 16 / 50 "
    "groups. Hence absmax at 8 bits and 16 groups by default; W8A8 then 44.9 dB there (today's W8A8: 40.3 dB).",
    "",
    FULL_STUDY,
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-images", type=int, default=256)
    ap.add_argument("--rows", nargs="*", default=["tuner", "quanto"], choices=["main", "tuner", "quanto", "torchao"])
    ap.add_argument("--mixed", type=Path, help="JSON {row name: methods} of mixed configs to add")
    ap.add_argument("--cache", default="branch", help="cache file suffix (one per concurrent process)")
    ap.add_argument("--write", action="store_true", help="write BENCHMARKS.md from the saved caches")
    args = ap.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = RESULTS / f"quant_{args.cache}.pt"
    if args.write:
        stores = [torch.load(p, weights_only=False) for p in sorted(RESULTS.glob("quant_*.pt"))]
        result = compare(stores, args.n_images)
        (RESULTS / "quant.json").write_text(json.dumps(result, indent=2))
        write_md(result, json.loads((RESULTS / "quant_commands.json").read_text()))
        return
    if "main" in args.rows:
        measure_tuner(tuner_rows("main: ", None), args.n_images, cache)
    if "tuner" in args.rows:
        measure_tuner(tuner_rows("", args.mixed), args.n_images, cache)
    if "quanto" in args.rows:
        measure_quanto(args.n_images, cache)
    if "torchao" in args.rows:  # torchao's int8 dynamic W8A8 kernels pay on CUDA only (see "Real low-bit kernels")
        if not torch.cuda.is_available():
            print("torchao row skipped: CUDA only", file=sys.stderr)
        else:  # not yet run on a GPU: this machine has none
            measure_tuner({"torchao int8 dynamic W8A8 (Linear; CUDA)": {"quant": {
                "weight_bits": 8, "act_bits": 8, "kernels": "torchao"}}}, args.n_images, RESULTS / "quant_cuda.pt", "cuda")


if __name__ == "__main__":
    main()
