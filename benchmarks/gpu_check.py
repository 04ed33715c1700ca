"""A GPU check ready to run (issue 20): one command, no download, one JSON file of results.

On one CUDA GPU it builds a Stable-Diffusion-1.5-shaped pipeline with random weights (U-Net widths
320/640/1280/1280, 768-d cross-attention, 512 px, fp16), then
- times (CUDA events, `tuner.evaluators.latency`) the baseline and each family at its paper default
  (ToMe r=0.5, CA-ToMe CONFIG_3, DeepCache N=3, FRDiff, torchao int8 and fp8 per-layer quantization,
  every solver at 20 steps), not compiled and compiled (`torch.compile`, inductor);
- runs a 3-trial study with the memory objective (`tuner study run`'s code path);
- writes everything to one JSON file (default benchmarks/results/gpu_check.json).
Weights are random: speed and memory only. torchao paths run only when torchao is installed (fp8 also
needs compute capability >= 8.9); otherwise the row says why it was skipped.

    python benchmarks/gpu_check.py                 # on the GPU machine (<= 8 min on one H100-class GPU)
    python benchmarks/gpu_check.py --dry-run       # tiny shapes on the CPU (the test suite runs this)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tiny_user_models: tokenizer files and random Inception weights

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_check.json"
SOLVERS = [{"name": "dpmsolver++"}, {"name": "unipc"}, {"name": "deis"}, {"name": "euler"}, {"name": "heun"},
           {"name": "ddim"}, {"name": "ddpm", "coefficients": "liyan"}]


def settings(dry_run: bool) -> dict:
    """Shapes and budgets: the real run on CUDA, or tiny shapes on the CPU (dry run)."""
    if dry_run:
        return {"device": "cpu", "dtype": "float32", "resolution": 32, "steps": 3, "images": 1, "repeats": 1,
                "compile_backend": "eager", "study_images": 4, "objectives": ["latency", "fid"],
                "compiled_rows": ["ToMe r=0.5", "DeepCache N=3"]}  # dynamo traces slowly on a CPU: a sample
    return {"device": "cuda", "dtype": "float16", "resolution": 512, "steps": 20, "images": 1, "repeats": 3,
            "compile_backend": "inductor", "study_images": 8, "objectives": ["latency", "fid", "memory"],
            "compiled_rows": None}  # None: every row compiled too


def build_pipeline(folder: Path, dry_run: bool) -> Path:
    """An SD-1.5-shaped diffusers pipeline with random weights, saved with save_pretrained (tiny: the tests'
    SD-1.5 layout)."""
    from tiny_user_models import build_sd15

    if dry_run:
        return build_sd15(folder)
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tiny_user_models import write_tokenizer_files

    torch.manual_seed(0)
    vocab, merges = write_tokenizer_files(folder.parent / "tok_src")
    tok = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=2, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
                                        pad_token_id=len(tok) - 1))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # SD-1.5's config
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


def candidates(steps: int, device: str) -> dict:
    """Each family at its paper default, as tuner configs; None with a reason where a library or the GPU
    lacks what the row needs."""
    from tuner.methods.catome import PAPER_CHECKPOINTS
    from tuner.methods.catome_profile import scale_checkpoints

    rows = {"ToMe r=0.5": {"tome": {"ratio": 0.5}},
            "CA-ToMe CONFIG_3": {"catome": {"threshold": 0.7,
                                            "checkpoints": scale_checkpoints(PAPER_CHECKPOINTS["CONFIG_3"], 50, steps)}},
            "DeepCache N=3": {"deepcache": {"interval": 3}},
            "FRDiff": {"frdiff": {}}}
    have_torchao = importlib.util.find_spec("torchao") is not None
    int8 = {"quant": {"weight_bits": 8, "act_bits": 8, "kernels": "torchao"}}
    rows["torchao int8 W8A8"] = int8 if have_torchao and device == "cuda" else (
        "skipped: torchao not installed" if not have_torchao else "skipped: torchao int8 kernels need CUDA")
    rows["torchao fp8"] = fp8_status(have_torchao, device)
    for s in SOLVERS:
        rows[f"solver {s['name']}"] = {"solver": s}
    return rows


def fp8_status(have_torchao: bool, device: str):
    """fp8 per-layer quantization is torchao's own transform (tuner's quant has no fp8 path): a marker the
    timing applies itself, or why it cannot run here."""
    if not have_torchao:
        return "skipped: torchao not installed"
    if device != "cuda" or torch.cuda.get_device_capability() < (8, 9):
        return "skipped: fp8 needs a CUDA GPU with compute capability >= 8.9"
    return "torchao-fp8"


class _TorchaoFp8:
    """Context: the U-Net's Linear layers quantized to fp8 by torchao on a copy-free swap, undone after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        import copy

        from torchao.quantization import float8_dynamic_activation_float8_weight, quantize_

        self.saved = self.model.pipe.unet
        unet = copy.deepcopy(self.model.unet)
        quantize_(unet, float8_dynamic_activation_float8_weight())
        self.model.pipe.unet = unet
        return self

    def __exit__(self, *exc):
        self.model.pipe.unet = self.saved


def time_rows(model, rows: dict, s: dict) -> dict:
    """Seconds per image of the baseline and every row, each in its own block (apply, warm-up, timed
    calls, remove): compiled models recompile at every apply, so blocks are timed the same way for both."""
    from tuner.apply_config import apply
    from tuner.evaluators.latency import blocked_medians
    from tuner.evaluators.memory import PeakMemory

    prompts, seeds = ["a photo of a cat"] * s["images"], list(range(s["images"]))
    fns, contexts, out = {"baseline": lambda: model(prompts, seeds, num_inference_steps=s["steps"])}, {}, {}
    for name, cfg in rows.items():
        if isinstance(cfg, str) and cfg.startswith("skipped"):
            out[name] = {"skipped": cfg}
            continue
        fns[name] = fns["baseline"]
        contexts[name] = (lambda: _TorchaoFp8(model)) if cfg == "torchao-fp8" else (lambda c=cfg: apply(model.target, c))
    peaks = {name: PeakMemory(model.device) for name in fns}
    samples: dict = {}
    med = {}
    for name in fns:  # one block at a time, so a failing row is recorded and the others still run
        try:
            with peaks[name]:
                med.update(blocked_medians({name: fns[name]}, s["repeats"], 1, model.device,
                                           {name: contexts[name]} if name in contexts else None, samples=samples))
        except Exception as e:  # noqa: BLE001 - a row that cannot run on this machine says why
            out[name] = {"failed": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    base = med.get("baseline")
    for name, m in med.items():
        out[name] = {"seconds_per_image": m / s["images"], "speedup": (base / m) if base else None,
                     "memory_gb": peaks[name].gb, "config": rows.get(name) if name != "baseline" else None}
    return out


def run_timings(folder: Path, s: dict) -> dict:
    import warnings

    from tuner.models import load_model
    from tuner.models.compile import compile_model

    model = load_model(str(folder), s["device"], s["dtype"], resolution=s["resolution"])
    rows = candidates(s["steps"], s["device"])
    result = {"not_compiled": time_rows(model, rows, s)}
    with warnings.catch_warnings():  # every apply says the graph is rebuilt: expected here
        warnings.simplefilter("ignore")
        compile_model(model, s["compile_backend"])
        keep = s["compiled_rows"]
        result["compiled"] = time_rows(model, rows if keep is None else {k: rows[k] for k in keep}, s)
    torch._dynamo.reset()
    return result


def run_study(folder: Path, inception: Path, workdir: Path, s: dict) -> dict:
    """3 trials of ToMe x DeepCache on the pipeline, with the memory objective on CUDA."""
    from tuner.study.runner import run_study as run
    from tuner.study.spec import load_spec

    toml = workdir / "gpu_check.toml"
    toml.write_text("\n".join([
        'name = "gpu_check"', "n_trials = 3", "seed = 0", f"objectives = {json.dumps(s['objectives'])}",
        "[model]", f'id = "{folder}"', f'device = "{s["device"]}"', f'dtype = "{s["dtype"]}"',
        f"resolution = {s['resolution']}", "threads = 1",
        "[image_set]", f"n_images = {s['study_images']}", f"steps = {s['steps']}",
        "[evaluator]", "latency_images = 1", "latency_repeats = 1", f'inception_weights = "{inception}"',
        "[sampler]", 'name = "random"',
        "[space.tome]", "ratio = [0.3, 0.6]", "[space.deepcache]", "interval = [2, 3]", ""]))
    t0 = time.perf_counter()
    summary = run(load_spec(toml), progress=False, log=lambda msg: None)
    return {"wall_seconds": time.perf_counter() - t0, "objectives": s["objectives"],
            "summary": json.loads(json.dumps(summary, default=str))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (what the test suite runs)")
    ap.add_argument("--out", default=str(RESULTS), help="JSON file written (default: %(default)s)")
    args = ap.parse_args(argv)
    s = settings(args.dry_run)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA GPU here; use --dry-run for the CPU check", file=sys.stderr)
        return 2
    torch.set_num_threads(1) if args.dry_run else None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        from tiny_user_models import build_inception_weights

        tmp = Path(tmp)
        folder = build_pipeline(tmp / "sd15", args.dry_run)
        inception = build_inception_weights(tmp / "inception.pth")
        out = {"dry_run": args.dry_run, "settings": s, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if s["device"] == "cuda" else None,
               "machine": platform.processor() or platform.machine(),
               "torchao": importlib.util.find_spec("torchao") is not None,
               "timings": run_timings(folder, s), "study": run_study(folder, inception, tmp, s)}
    out["wall_seconds"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"gpu_check: {'dry run ' if args.dry_run else ''}done in {out['wall_seconds']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
