"""`tuner apply`: a config JSON applied to its model, a grid of generated images saved.

Validates its input first (one-line error, exit 2, nothing written)."""

from __future__ import annotations

import sys

from tuner.commands.common import MAX_SEED, MAX_STEPS, add_threads_option, check_int, check_out_file, recorded_image_set
from tuner.errors import TunerError
from tuner.progress import bars_enabled
from tuner.threads import check_threads

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def register(sub) -> None:
    p = sub.add_parser("apply", help="apply a config JSON to its model and save a grid of generated images "
                                     "(--compare: beside the baseline's, with a difference row and the speedup)")
    p.add_argument("config", help="config JSON (e.g. from `tuner export`)")
    p.add_argument("--out", required=True, metavar="FILE", help=f"output image grid ({', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--n-images", type=int, default=None, metavar="N",
                   help="images in the grid (default 20, with --compare 8): the proxy cycles digit classes 0..9, a "
                        "user model its prompts (--prompts, else the config's, else tuner's set)")
    p.add_argument("--compare", action="store_true",
                   help="a baseline row, the accelerated row and a per-pixel difference row, labelled with seed and "
                        "class or prompt, the steps each ran and the speedup measured in this call (timed interleaved)")
    p.add_argument("--steps", type=int, default=None, metavar="S",
                   help="num_inference_steps asked of the pipeline (default: the config's environment."
                        "num_inference_steps, else 50); a `timesteps` entry in the config runs its own count, "
                        "which the output reports")
    p.add_argument("--seed", type=int, default=0, help="seed of the images (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--unet-weights", default=None, metavar="FILE", help="proxy U-Net safetensors (default: the shipped file)")
    add_threads_option(p)
    p.add_argument("--model", default=None, help="'proxy' or a pipeline folder / hub id (default: the config's model)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="user models: dtype")
    p.add_argument("--prompts", default=None, help="user models: prompts file (default: the config's, else tuner's set)")
    p.set_defaults(func=run_apply)


def recorded_steps(config) -> int | None:
    """The denoising steps an exported config was measured with (environment.num_inference_steps)."""
    steps = (config.environment or {}).get("num_inference_steps")
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise TunerError(f"config: environment.num_inference_steps={steps!r} must be an integer in 1..{MAX_STEPS}")
    return steps


def run_apply(args) -> int:
    from tuner.config import AccelConfig

    config = AccelConfig.load(args.config)  # corrupt or unknown content: one line, exit 2, nothing written
    if args.n_images is None:
        args.n_images = 8 if args.compare else 20
    check_int("--n-images", args.n_images, 1, 1024)
    check_int("--steps", args.steps, 1, MAX_STEPS)  # 0 is refused, not read as "not given"
    check_int("--seed", args.seed, 0, MAX_SEED)
    check_threads(args.threads)
    steps = args.steps if args.steps is not None else recorded_steps(config) or 50
    out = check_out_file(args.out, "--out", IMAGE_SUFFIXES)
    from tuner.apply_config import apply
    from tuner.commands.common import model_settings
    from tuner.models import load_model
    from tuner.models.prompts import read_prompts

    settings = model_settings(args, config)  # the config's own model; another --model is refused
    source = settings.pop("source")
    if source.kind == "proxy":
        if args.prompts is not None:
            raise TunerError("--prompts: the proxy model is conditioned on digit classes, not prompts")
        conditions = [i % 10 for i in range(args.n_images)]
    else:
        recorded = (recorded_image_set(config.environment or {}) or {}).get("prompts")
        prompts = read_prompts(args.prompts, "--prompts") if args.prompts else (
            tuple(recorded) if isinstance(recorded, list) and recorded else read_prompts(None))
        conditions = [prompts[i % len(prompts)] for i in range(args.n_images)]
    from tuner.threads import set_threads

    set_threads(args.threads)
    pipe = load_model(source, args.device, settings.get("dtype"), settings.get("unet_weights"),
                      settings.get("scheduler"), settings.get("guidance_scale"), settings.get("resolution"),
                      settings.get("batch_size"), settings.get("solver"))
    seeds = [args.seed * 1_000_003 + i for i in range(args.n_images)]
    if "quant" in config.methods and pipe.kind != "proxy":  # a user model's default calibration, as in its study
        from tuner.methods.quant import calibrate

        calibrate(pipe)
    if args.compare:
        return _compare(pipe, config, conditions, seeds, steps, out)
    from tuner.report.gallery import step_counter, steps_text

    with apply(pipe.target, config), step_counter(pipe) as steps_run:
        images = pipe(conditions, seeds, num_inference_steps=steps, progress=bars_enabled())
    run = steps_run()  # counted: a `timesteps` entry sets what runs, whatever --steps says
    from torchvision.utils import save_image

    try:
        save_image(images, str(out), nrow=10, padding=1)
    except OSError as e:
        raise TunerError(f"--out {out}: cannot write ({e.strerror or type(e).__name__})") from None
    print(f"{args.n_images} images ({config.describe()}; {steps_text(run)} steps run, {steps} asked) -> {out}")
    return 0


def _compare(pipe, config, conditions, seeds, steps, out) -> int:
    from tuner.report.compare import compare, grid_image
    from tuner.report.gallery import steps_text
    from tuner.report.figures import config_text

    print(f"compare: baseline and accelerated, {len(seeds)} images each, one warm-up and 3 timed calls apiece",
          file=sys.stderr, flush=True)
    result = compare(pipe, config, conditions, seeds, steps)
    try:
        grid_image(result, config_text(config.to_dict()["methods"], "; ")).save(out)
    except OSError as e:
        raise TunerError(f"--out {out}: cannot write ({e.strerror or type(e).__name__})") from None
    print(f"{len(seeds)} images, baseline {steps_text(result.baseline.steps_run)} steps run, accelerated ({config.describe()}) "
          f"{steps_text(result.accelerated.steps_run)} steps run, speedup {result.speedup:.2f}x measured here -> {out}")
    return 0
