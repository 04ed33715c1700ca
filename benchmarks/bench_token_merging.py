"""Token merging on the proxy model: ToMe r sweep, CA-ToMe threshold sweep, CA-ToMe caching configurations
(the paper's CONFIG_1/2/3 vs profile-derived checkpoint sets of the same size), the Jaccard profile, and a
micro-benchmark of one top-level transformer block (why merging does or does not pay at 256 tokens).

Each part is one short run (the machine is shared; run under `flock /tmp/bench.lock`):

    flock /tmp/bench.lock python benchmarks/bench_token_merging.py --part profile
    flock /tmp/bench.lock python benchmarks/bench_token_merging.py --part tome
    flock /tmp/bench.lock python benchmarks/bench_token_merging.py --part catome
    flock /tmp/bench.lock python benchmarks/bench_token_merging.py --part checkpoints
    flock /tmp/bench.lock python benchmarks/bench_token_merging.py --part block
    flock /tmp/bench.lock python benchmarks/bench_token_merging.py --part latency64
    python benchmarks/bench_token_merging.py --write-md     # BENCHMARKS.md section from the JSON results

Speed is always against the model's default attention processor (PyTorch SDPA), timed interleaved with
the baseline in the same run (`ScoringContext.latency`). Results: benchmarks/results/token_merging_*.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

RESULTS = Path(__file__).resolve().parent / "results"
SECTION = "## Token merging (ToMe, CA-ToMe)"
KEYS = ("speedup", "seconds_per_image", "baseline_seconds_per_image", "fid", "kid", "psnr", "ssim",
        "class_accuracy", "macs")


def _context(n_images: int, steps: int, repeats: int):
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.proxy.model import load_proxy_pipeline

    pipe = load_proxy_pipeline("cpu" if not torch.cuda.is_available() else None)
    ctx = ScoringContext(pipe, ImageSet(n_images, steps, 0), latency_repeats=repeats)
    base = ctx.evaluate_baseline()
    return pipe, ctx, base


def _attention_processor(pipe) -> str:
    return type(pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.processor).__name__


def _eval(ctx, methods: dict) -> dict:
    from tuner.config import AccelConfig

    cfg = AccelConfig.from_dict({"schema_version": 2, "methods": methods})
    r = ctx.evaluate(cfg)
    return {k: r[k] for k in KEYS if k in r}


def _save(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"token_merging_{name}.json").write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2))


def part_profile(args) -> None:
    from tuner.scoring import ImageSet
    from tuner.methods.catome_profile import checkpoints_from_profile, profile_merges, save_profile
    from tuner.methods.catome import PAPER_CHECKPOINTS
    from tuner.proxy.model import load_proxy_pipeline

    pipe = load_proxy_pipeline("cpu" if not torch.cuda.is_available() else None)
    ps = ImageSet(args.n_images, args.steps, 0)
    df = profile_merges(pipe, ps.classes, ps.seeds, args.steps, args.threshold)
    derived = {name: checkpoints_from_profile(df, max_count=len(cps)) for name, cps in PAPER_CHECKPOINTS.items()}
    by_delta = checkpoints_from_profile(df, delta=args.delta)
    paths = save_profile(df, RESULTS, by_delta, stem="token_merging_jaccard_profile",
                         title=f"proxy U-Net D1/U1, t={args.threshold:g}, {args.n_images} images x {args.steps} "
                               f"DDIM steps; red: checkpoints at delta={args.delta:g}")
    mean = df.groupby("step")[["n_pairs", "jaccard_distance"]].mean()
    _save("profile", {
        "threshold": args.threshold, "n_images": args.n_images, "steps": args.steps, "delta": args.delta,
        "checkpoints_at_delta": by_delta, "derived_same_count": derived,
        "mean_pairs_first_last": [float(mean["n_pairs"].iloc[0]), float(mean["n_pairs"].iloc[-1])],
        "tokens_per_block": 256,
        "jaccard_by_step": {int(s): round(float(v), 4) for s, v in mean["jaccard_distance"].fillna(0).items()},
        "csv": str(paths["csv"].relative_to(RESULTS.parent.parent)),
        "png": str(paths["png"].relative_to(RESULTS.parent.parent)),
    })


def part_tome(args) -> None:
    pipe, ctx, base = _context(args.n_images, args.steps, args.repeats)
    rows = {}
    for r in (0.1, 0.3, 0.5, 0.7):
        rows[f"r={r}"] = _eval(ctx, {"tome": {"ratio": r}})
    rows["r=0.5, max_downsample=2"] = _eval(ctx, {"tome": {"ratio": 0.5, "max_downsample": 2}})
    _save("tome", {"processor": _attention_processor(pipe), "baseline": {k: base.get(k) for k in ("fid", "class_accuracy", "seconds_per_image")},
                   "rows": rows})


def part_catome(args) -> None:
    pipe, ctx, base = _context(args.n_images, args.steps, args.repeats)
    rows = {}
    for t in (0.4, 0.7, 0.9, 0.95, 0.98, 1.0):
        rows[f"t={t}"] = _eval(ctx, {"catome": {"threshold": t}})
    _save("catome", {"processor": _attention_processor(pipe), "baseline": {k: base.get(k) for k in ("fid", "class_accuracy", "seconds_per_image")},
                     "rows": rows})


def part_checkpoints(args) -> None:
    from tuner.methods.catome_profile import scale_checkpoints
    from tuner.methods.catome import PAPER_CHECKPOINTS

    prof = json.loads((RESULTS / "token_merging_profile.json").read_text())
    pipe, ctx, base = _context(args.n_images, args.steps, args.repeats)
    t = prof["threshold"]
    rows = {"every step": {**_eval(ctx, {"catome": {"threshold": t}}), "checkpoints": None}}
    for name, cps in PAPER_CHECKPOINTS.items():
        paper = scale_checkpoints(cps, 50, args.steps)
        rows[f"{name} (paper)"] = {**_eval(ctx, {"catome": {"threshold": t, "checkpoints": paper}}), "checkpoints": paper}
        derived = prof["derived_same_count"][name]
        rows[f"{name}-size profile-derived"] = {**_eval(ctx, {"catome": {"threshold": t, "checkpoints": derived}}),
                                                "checkpoints": derived}
    _save("checkpoints", {"threshold": t, "processor": _attention_processor(pipe), "rows": rows})


def part_block(args) -> None:
    """One D1 transformer block of the trained proxy (width 16): the block, its self-attention on all tokens
    and on the tokens left by r=0.5, and the cost of matching and of merge+unmerge; at 256 tokens (the
    proxy's 16 px) with batch 64, and at 4,096 tokens (a 64 px input) with batch 8."""
    from tuner.evaluators.latency import interleaved_medians
    from tuner.methods.merge import match_ratio, match_threshold, merge, unmerge
    from tuner.proxy.model import load_proxy_pipeline

    pipe = load_proxy_pipeline("cpu" if not torch.cuda.is_available() else None)
    block = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    dev = pipe.device
    out = {"processor": _attention_processor(pipe)}
    for res in (16, 64):
        n = res * res
        torch.manual_seed(0)
        batch = 64 if res == 16 else 8  # 64 = 32 images with CFG; fewer at 4,096 tokens to stay short
        x = torch.randn(batch, n, block.norm1.normalized_shape[0], device=dev)
        ehs = torch.randn(batch, 4, 32, device=dev)
        plan_r = match_ratio(x, res, res, 2, 2, 0.5)
        norm = block.norm1(x)
        fns = {
            "block": lambda: block(x, encoder_hidden_states=ehs),
            "attn1": lambda: block.attn1(norm),
            "attn1 on merged (r=0.5)": lambda: block.attn1(merge(norm, plan_r)),
            "match_ratio r=0.5": lambda: match_ratio(x, res, res, 2, 2, 0.5),
            "match_threshold t=0.9": lambda: match_threshold(x, res, res, 2, 2, 0.9),
            "merge+unmerge": lambda: unmerge(merge(norm, plan_r), plan_r),
        }
        reps = 20 if res == 16 else 3
        with torch.no_grad():
            med = interleaved_medians(fns, repeats=reps, warmup=1, device=dev)
        out[f"{n} tokens"] = {k: round(v * 1e3, 3) for k, v in med.items()}  # milliseconds
    _save("block", out)


def part_latency64(args) -> None:
    """Speed only (the proxy was trained at 16 px, so no quality here): the same U-Net at 64 px, where D1/U1
    self-attention has 4,096 tokens. 2 images, 10 DDIM steps, interleaved with the baseline."""
    from tuner.config import AccelConfig
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.proxy.model import load_proxy_pipeline

    pipe = load_proxy_pipeline("cpu" if not torch.cuda.is_available() else None)
    pipe.set_resolution(64)
    ctx = ScoringContext(pipe, ImageSet(2, 10, 0), latency_images=2, latency_repeats=args.repeats)
    rows = {}
    for name, methods in (("ToMe r=0.5", {"tome": {"ratio": 0.5}}),
                          ("CA-ToMe t=0.95, every step", {"catome": {"threshold": 0.95}}),
                          ("CA-ToMe t=0.95, checkpoints [0, 5]", {"catome": {"threshold": 0.95, "checkpoints": [0, 5]}})):
        lat = ctx.latency(AccelConfig.from_dict({"schema_version": 2, "methods": methods}))
        rows[name] = {"speedup": lat["baseline"] / lat["candidate"], "seconds_per_image": lat["candidate"],
                      "baseline_seconds_per_image": lat["baseline"]}
    _save("latency64", {"processor": _attention_processor(pipe), "resolution": 64, "steps": 10, "rows": rows})


# --- BENCHMARKS.md ---------------------------------------------------------------------------------
def _fmt(v, nd=3):
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _table(rows: dict, extra: str | None = None) -> list[str]:
    head = "| config | speedup | s/image (cand / base) | proxy FID | KID | PSNR | SSIM | class acc | GMACs/image |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for name, r in rows.items():
        label = name + (f" `{r['checkpoints']}`" if extra and r.get("checkpoints") else "")
        lines.append(f"| {label} | {_fmt(r.get('speedup'), 2)}× | {_fmt(r.get('seconds_per_image'), 4)} / "
                     f"{_fmt(r.get('baseline_seconds_per_image'), 4)} | {_fmt(r.get('fid'), 2)} | {_fmt(r.get('kid'), 4)} | "
                     f"{_fmt(r.get('psnr'), 2)} | {_fmt(r.get('ssim'), 3)} | {_fmt(r.get('class_accuracy'), 3)} | "
                     f"{_fmt(r['macs'] / 1e9 if r.get('macs') else None, 3)} |")
    return lines


def write_md(args) -> None:
    def load(name):
        p = RESULTS / f"token_merging_{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    prof, tome, ca, cps, blk, l64 = (load(n) for n in ("profile", "tome", "catome", "checkpoints", "block", "latency64"))
    body = [SECTION, "",
            "Commands (each part one run, n_images 32, 50 DDIM steps, CFG batch 2×, 2-core CPU shared with other agents):",
            "`flock /tmp/bench.lock chrt -f 10 python benchmarks/bench_token_merging.py --part "
            "{profile,tome,catome,checkpoints,block,latency64}` (the tome part ran without `chrt`), "
            "then `python benchmarks/bench_token_merging.py --write-md`. Raw results: `benchmarks/results/token_merging_*.json`.",
            "Speedups are against the same model with its default attention processor "
            f"(`{(tome or ca or {}).get('processor', 'AttnProcessor2_0')}`, PyTorch SDPA), timed interleaved with the "
            "baseline in the same run (median of 3, 8 images per timed call).", ""]
    if args.notes and Path(args.notes).is_file():
        body += [Path(args.notes).read_text().rstrip(), ""]
    if tome:
        b = tome["baseline"]
        body += [f"### ToMe r sweep (random dst, 2×2 stride, D1/U1 unless noted; baseline FID {_fmt(b.get('fid'), 2)}, "
                 f"class acc {_fmt(b.get('class_accuracy'), 3)})", ""] + _table(tome["rows"]) + [""]
    if ca:
        body += ["### CA-ToMe threshold sweep (recomputed every step, D1/U1)", ""] + _table(ca["rows"]) + [""]
    if cps:
        body += [f"### CA-ToMe caching: paper checkpoint sets vs profile-derived sets of the same size (t={cps['threshold']})", ""]
        body += _table(cps["rows"], extra="cps") + [""]
    if prof:
        body += [f"### Jaccard profile of the proxy (t={prof['threshold']}, {prof['n_images']} images, {prof['steps']} steps)", "",
                 f"![Jaccard profile]({prof['png']}) (table: `{prof['csv']}`)", "",
                 f"Checkpoints at δ={prof['delta']}: `{prof['checkpoints_at_delta']}`; densest sets within the paper "
                 f"configs' sizes: " + "; ".join(f"{k} size → `{v}`" for k, v in prof["derived_same_count"].items()),
                 f"Mean merged pairs per image (of 192 src among 256 tokens): step 0 {prof['mean_pairs_first_last'][0]:.1f}, "
                 f"last step {prof['mean_pairs_first_last'][1]:.1f}.", ""]
    if blk:
        body += ["### One D1 transformer block of the proxy (milliseconds, median; batch 64 at 256 tokens, 8 at 4,096)", "",
                 "| tokens | " + " | ".join(k for k in blk["256 tokens"]) + " |",
                 "|---|" + "---|" * len(blk["256 tokens"])]
        for key in ("256 tokens", "4096 tokens"):
            if key in blk:
                body.append(f"| {key.split()[0]} | " + " | ".join(_fmt(v, 3) for v in blk[key].values()) + " |")
        body.append("")
    if l64:
        body += ["### Speed only at 64 px (4,096 tokens at D1/U1; 2 images, 10 steps, `--part latency64`)", "",
                 "| config | speedup | s/image (cand / base) |", "|---|---|---|"]
        for name, r in l64["rows"].items():
            body.append(f"| {name} | {r['speedup']:.2f}× | {r['seconds_per_image']:.3f} / {r['baseline_seconds_per_image']:.3f} |")
        body.append("")
    section = "\n".join(body).rstrip() + "\n"
    write_section(SECTION, section)
    print(section)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["profile", "tome", "catome", "checkpoints", "block", "latency64"])
    ap.add_argument("--write-md", action="store_true")
    ap.add_argument("--notes", default=str(RESULTS / "token_merging_notes.md"), help="analysis text for the section")
    ap.add_argument("--n-images", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.95, help="CA-ToMe threshold of the profile/caching parts")
    ap.add_argument("--delta", type=float, default=1.0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.part:
        {"profile": part_profile, "tome": part_tome, "catome": part_catome, "checkpoints": part_checkpoints,
         "block": part_block, "latency64": part_latency64}[args.part](args)
        print(f"# {args.part}: {time.perf_counter() - t0:.0f} s")
    if args.write_md:
        write_md(args)


if __name__ == "__main__":
    main()
