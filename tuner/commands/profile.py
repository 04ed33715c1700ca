"""`tuner profile`: Jaccard profile of token merging on the baseline model, and the CA-ToMe checkpoint set
derived from it. Writes <out>/jaccard_profile.csv and .png, prints the checkpoint set."""

from __future__ import annotations

import json

from tuner.commands.common import MAX_STEPS, add_threads_option, check_int
from tuner.errors import TunerError
from tuner.progress import bars_enabled
from tuner.threads import check_threads


def register(sub) -> None:
    p = sub.add_parser("profile", help="Jaccard profile of token-merge pairs across steps; derive CA-ToMe checkpoints",
                       description="Profile which token pairs token merging would merge at every denoising step "
                                   "of the baseline model, and derive the CA-ToMe checkpoint set (the steps where "
                                   "the merge pairs are recomputed) from it. Writes OUT/jaccard_profile.csv and .png.")
    p.add_argument("--n-images", type=int, default=16, metavar="N",
                   help="images profiled, balanced classes and fixed seeds (default 16)")
    p.add_argument("--steps", type=int, default=50, metavar="S", help="denoising steps, DDIM (default 50)")
    p.add_argument("--threshold", type=float, default=0.7, metavar="T",
                   help="cosine similarity at which a pair is merged, 0..1 (default 0.7)")
    p.add_argument("--delta", type=float, default=None, metavar="D",
                   help="checkpoint wherever the Jaccard distance accumulated since the last one exceeds this "
                        "(default: 1.0, or the densest set within --max-count)")
    p.add_argument("--max-count", type=int, default=None, metavar="K", help="at most this many checkpoints")
    p.add_argument("--max-downsample", type=int, default=1, choices=[1, 2, 4, 8],
                   help="profile the U-Net levels down to this downsampling factor (default 1: the top level)")
    p.add_argument("--out", default="profile", metavar="DIR", help="output folder for the CSV and PNG (default ./profile)")
    p.add_argument("--seed", type=int, default=0, help="seed of the profiled images (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--unet-weights", default=None, metavar="FILE", help="proxy U-Net safetensors (default: the shipped file)")
    add_threads_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run_profile)


def run_profile(args) -> int:
    from pathlib import Path

    # Validate everything before loading a model or writing a file.
    if not 0.0 <= args.threshold <= 1.0:
        raise TunerError(f"--threshold={args.threshold} is out of range (0..1)")
    if args.delta is not None and not args.delta >= 0:
        raise TunerError(f"--delta={args.delta} must be >= 0")
    if args.max_count is not None and args.max_count < 1:
        raise TunerError(f"--max-count={args.max_count} must be >= 1")
    check_int("--steps", args.steps, 2, MAX_STEPS)
    check_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TunerError(f"--out {out} exists and is not a folder")

    from tuner.scoring import ImageSet
    from tuner.methods.catome_profile import checkpoints_from_profile, profile_merges, save_profile
    from tuner.proxy.model import load_proxy_pipeline

    image_set = ImageSet(args.n_images, args.steps, args.seed)  # range-checks n_images
    from tuner.threads import set_threads

    set_threads(args.threads)
    pipe = load_proxy_pipeline(args.device, args.unet_weights)
    df = profile_merges(pipe, image_set.classes, image_set.seeds, args.steps, args.threshold, args.max_downsample,
                        progress=not args.json and bars_enabled())
    delta = args.delta if args.delta is not None or args.max_count is not None else 1.0
    checkpoints = checkpoints_from_profile(df, delta, args.max_count)
    paths = save_profile(df, out, checkpoints)
    result = {"checkpoints": checkpoints, "count": len(checkpoints), "delta": delta, "threshold": args.threshold,
              "steps": args.steps, "n_images": args.n_images, "blocks": sorted(df["block"].unique()),
              "mean_jaccard_distance": float(df["jaccard_distance"].mean()),
              "mean_pairs_per_image": float(df["n_pairs"].mean()),
              "csv": str(paths["csv"]), "png": str(paths["png"])}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:<22}  {v}")
    return 0
