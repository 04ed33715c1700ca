"""Studies on a user's own diffusers pipeline, end to end through the CLI, on tiny random-weight SD-1.5
and SDXL layouts (tests/tiny_user_models.py): study run -> pareto -> export -> evaluate -> apply, with FID in
Inception space (a random-weight torch-fidelity Inception file) against the baseline's own images."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_user_models import study_toml
from tuner.cli import main


SPACES = {
    # SD-1.5 layout: every family, including the scheduler's own timestep lists on PNDM
    "sd15": "[space.tome]\nratio = [0.3, 0.6]\n[space.deepcache]\ninterval = [2, 3]\n"
            "[space.timesteps]\ncounts = [3, 2]\n[space.solver]\n",
    # SDXL layout: token merging in every trial, at its default level (the top level has no attention)
    "sdxl": "[space.tome]\noptional = false\nratio = [0.3, 0.6]\n"
            "[space.deepcache]\ninterval = [2, 3]\n",
}


def write_study(user_models, tmp_path, layout: str, **extra) -> "Path":
    text = study_toml(f"tiny-{layout}", user_models[layout], prompts=user_models["prompts"],
                      evaluator=f'inception_weights = "{user_models["inception"]}"', space=SPACES[layout])
    for key, value in extra.items():
        text = text.replace(key, value)
    path = tmp_path / f"{layout}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_study_pareto_export_evaluate_apply(user_models, tmp_path, capsys, layout):
    toml = write_study(user_models, tmp_path, layout)
    assert main(["study", "run", str(toml), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["finished_in_study"] == 3 and summary["states"] == {"COMPLETE": 3}

    assert main(["study", "pareto", str(toml), "--json"]) == 0
    members = json.loads(capsys.readouterr().out)
    assert members and all("fid" in m["objectives"] and "psnr" in m["objectives"] for m in members)
    if layout == "sdxl":
        assert all(m["config"]["methods"]["tome"]["max_downsample"] == 2 for m in members)

    out = tmp_path / "best.json"
    assert main(["export", str(toml), "--best", "-o", str(out)]) == 0
    capsys.readouterr()
    exported = json.loads(out.read_text())
    assert exported["model_id"] == str(user_models[layout])
    assert exported["environment"]["model"]["resolution"] == 32
    assert exported["environment"]["image_set"]["prompts"] == ["a photo of a cat", "red car in the city at night",
                                                               "a blue house by a lake"]

    assert main(["evaluate", str(out), "--json", "--latency-repeats", "1", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_id"] == str(user_models[layout])
    assert result["fid_reference"].startswith("baseline images")
    assert result["n_images"] == 3 and result["fid"] >= 0 and result["baseline"]["fid"] > 0
    assert set(result["config"]) == set(exported["methods"])  # (printed floats are rounded)

    grid = tmp_path / "grid.png"
    assert main(["apply", str(out), "--out", str(grid), "--n-images", "2", "--device", "cpu"]) == 0
    assert grid.stat().st_size > 0


def test_evaluate_refuses_a_config_for_another_model(user_models, tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"schema_version": 2, "model_id": str(user_models["sd15"]), "methods": {}}))
    assert main(["evaluate", str(cfg), "--model", "proxy", "--n-images", "2", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "config is for model" in err and err.count("\n") == 1
    assert main(["evaluate", str(cfg), "--model", str(user_models["sdxl"]), "--n-images", "2", "--steps", "1"]) == 2


def test_same_seed_same_image_in_any_batch(user_models):
    """Common random numbers: image i depends only on (prompt i, seed i), not on its batch."""
    from tuner.models import load_model

    model = load_model(str(user_models["sd15"]), "cpu", resolution=32, batch_size=3)
    prompts, seeds = ["a photo of a cat", "red car", "a blue house"], [5, 6, 7]
    together = model(prompts, seeds, num_inference_steps=2)
    alone = model(prompts[1:2], seeds[1:2], num_inference_steps=2)
    assert together.shape == (3, 3, 32, 32) and 0 <= together.min() and together.max() <= 1
    assert torch.allclose(together[1], alone[0], atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_methods_adapt_to_the_model(user_models):
    """SDXL: token merging starts at the second level; DeepCache branches follow the layout; the timesteps
    family proposes the scheduler's own lists, which PNDM runs."""
    from tuner.search_spaces.space import SpaceContext, build_space
    from tuner.apply_config import apply
    from tuner.config import AccelConfig
    from tuner.models import load_model
    from tuner.methods.token_merge_patch import first_attention_level

    def facts(model, **more):  # what the solver's and timesteps' `prepare` measure on a user model
        return {"timesteps": {"scheduler": model.scheduler}, "solver": {"solver_coefficients": ("liyan",)}, **more}

    sdxl = load_model(str(user_models["sdxl"]), "cpu", resolution=32)
    sd15 = load_model(str(user_models["sd15"]), "cpu", resolution=32)
    assert first_attention_level(sdxl.unet) == 2 and first_attention_level(sd15.unet) == 1
    space = build_space({"tome": {"optional": False}, "timesteps": {"counts": [3, 2]}, "solver": {}},
                        SpaceContext(3, facts=facts(sd15, tome={"first_attention_level": first_attention_level(sd15.unet)})))
    assert space.to_config(space.prune({"token_merging": "tome", "tome.ratio": 0.5, "timesteps.schedule": "uniform",
                                        "timesteps.count": 3, "solver.name": "ddim"})).methods["tome"].max_downsample == 1
    ddpm = space.to_config({"token_merging": "tome", "tome.ratio": 0.5,
                            "timesteps.schedule": "uniform", "timesteps.count": 3, "solver.name": "ddpm"})
    assert ddpm.methods["solver"].coefficients == "liyan"  # DDPM 'baseline' has no diffusers scheduler
    cfg = space.to_config({"token_merging": "tome", "tome.ratio": 0.5,
                           "timesteps.schedule": "uniform", "timesteps.count": 2, "solver.name": "ddim"})
    assert cfg.methods["timesteps"].count == 2  # a count: any scheduler runs it at its own spacing
    with apply(sd15.pipe, cfg):
        assert sd15.timesteps(3) == [501, 1]  # DDIM (steps_offset=1, leading) for 2 steps
        images = sd15(["a cat"], [0], num_inference_steps=3)
    assert images.shape == (1, 3, 32, 32) and sd15.scheduler.set_timesteps.__self__ is sd15.scheduler
    xl_facts = facts(sdxl, tome={"first_attention_level": first_attention_level(sdxl.unet)})
    xl_space = build_space({"tome": {"optional": False}}, SpaceContext(3, facts=xl_facts))
    xl_tome = xl_space.to_config({"token_merging": "tome", "tome.ratio": 0.5}).methods["tome"]
    assert xl_tome.max_downsample == 2
    with apply(sdxl.pipe, AccelConfig.from_dict({"schema_version": 2, "methods": {"tome": {"ratio": 0.5, "max_downsample": 2}}})) as h:
        assert h.info["tome_blocks"] > 0


def test_default_prompt_set():
    from tuner.models.prompts import DEFAULT_PROMPTS, read_prompts

    prompts = read_prompts(DEFAULT_PROMPTS)
    assert len(set(prompts)) >= 64


def test_image_set_cycles_prompts():
    from tuner.scoring import ImageSet

    ps = ImageSet(5, 3, 0, ("a", "b"))
    assert ps.conditions == ["a", "b", "a", "b", "a"] and ps.subset(2).conditions == ["a", "b"]
    assert ImageSet(3, 3, 0).conditions == [0, 1, 2]


@pytest.mark.parametrize("name, layout", [("sd15", "sd15"), ("sdxl", "sdxl")])
def test_shipped_gpu_studies_load(user_models, tmp_path, capsys, name, layout):
    """studies/sd15.toml and sdxl.toml parse next to a pipeline folder of their layout; on a machine
    without CUDA `study run` stops with one line and creates nothing."""
    import shutil
    from pathlib import Path

    from tuner.study.spec import load_spec

    src = Path(__file__).resolve().parent.parent / "studies" / f"{name}.toml"
    toml = tmp_path / src.name
    shutil.copy(src, toml)
    folder_name = {"sd15": "stable-diffusion-v1-5", "sdxl": "stable-diffusion-xl-base-1.0"}[name]
    shutil.copytree(user_models[layout], tmp_path / "models" / folder_name)
    spec = load_spec(toml)
    assert spec.model.device == "cuda" and spec.model.dtype == "float16"
    assert spec.image_set.n_images == 32 and spec.image_set.steps == 25 and len(spec.image_set.prompts) >= 64
    if not torch.cuda.is_available():
        assert main(["study", "run", str(toml)]) == 2
        assert "CUDA" in capsys.readouterr().err and not list(tmp_path.glob("*.db"))


def test_baseline_with_reference_folder_and_clip_score(user_models, tmp_path, capsys):
    """`reference_images`: FID against a folder instead of the baseline; `clip_model`: a CLIP score."""
    from PIL import Image

    clip = user_models["clip"]
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, color in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (40, 40), color).save(ref / f"{i}.png")
    common = ["--model", str(user_models["sd15"]), "--device", "cpu", "--resolution", "32", "--n-images", "2",
              "--steps", "2", "--latency-images", "2", "--latency-repeats", "1", "--inception-weights",
              str(user_models["inception"]), "--json"]
    assert main(["baseline", *common, "--reference-images", str(ref), "--clip-model", str(clip)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fid_reference"] == str(ref) and "fid_seed_floor" not in out and out["fid"] > 0
    assert 0 <= out["clip_score"] <= 100 and out["feature_extractor"] == "inception"
    assert main(["baseline", *common]) == 0  # against its own images: the seed-noise floor is its scale
    own = json.loads(capsys.readouterr().out)
    assert own["fid"] == own["fid_seed_floor"] > 0 and abs(own["fid_to_itself"]) < 1e-3
