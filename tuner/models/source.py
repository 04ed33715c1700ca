"""Where a model comes from, checked without loading it: "proxy", a diffusers pipeline folder, or a hub id.

A pipeline folder is diffusers' `save_pretrained` layout: `model_index.json` naming each component, and
one sub-folder per component. We accept it when its denoiser is a `UNet2DConditionModel` (SD-1.x, SD-2.x,
SDXL and their fine-tunes) or a diffusion transformer tuner patches (PixArt-α/Σ, SD3, Flux: tuner.denoiser);
the source records which kind, so a study's default space holds only the families that denoiser takes. Each weights file of the
folder is opened (safetensors: header only, so a 5 GB file costs milliseconds) so a truncated download is
reported before any study database exists.

A hub id ("org/name") resolves to its local copy in the Hugging Face cache when there is one; otherwise it
needs the network, and offline that is a one-line error naming the id.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError

PROXY_ID = "proxy"
DENOISER_CLASS = "UNet2DConditionModel"
DENOISER_FOLDERS = ("unet", "transformer")  # the pipeline component that holds the denoiser, by kind
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "proxy" | "diffusers"
    id: str  # what the study and exported configs record: "proxy", the folder's absolute path, or a hub id
    folder: Path | None = None  # local pipeline folder (None: a hub id to download)
    pipeline_class: str | None = None  # model_index.json's _class_name
    denoiser: str = DENOISER_CLASS  # the denoiser's class name (its kind: tuner.denoiser.kind_of_class)
    flow: bool = False  # a flow-matching scheduler (SD3, Flux): their own solver family


def resolve_source(model_id: str, base: Path | None = None) -> ModelSource:
    """Check `model_id` and say where it lives. Folders are resolved against `base` (the TOML's folder)."""
    if model_id == PROXY_ID:
        return ModelSource("proxy", PROXY_ID)
    path = Path(model_id).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if path.exists() or model_id.startswith((".", "/", "~")) or model_id.count("/") != 1:
        if not path.exists():
            raise TunerError(f"model.id={model_id!r}: no such model folder ({path}); use \"proxy\" for the "
                             "embedded model")
        folder = path.resolve()
        return ModelSource("diffusers", str(folder), folder, *check_pipeline_folder(folder))
    cached = _cached_snapshot(model_id)
    if cached is not None:
        return ModelSource("diffusers", model_id, cached, *check_pipeline_folder(cached))
    if not is_online():
        raise TunerError(f"model.id={model_id!r}: no folder {path}, and as a hub id it needs the network, which this "
                         f"machine does not have: download it elsewhere (`hf download {model_id}`) and set model.id "
                         "to the pipeline folder")
    return ModelSource("diffusers", model_id, None, None)


def check_pipeline_folder(folder: Path) -> tuple[str, str, bool]:
    """(pipeline class, denoiser class, flow matching) of a diffusers folder whose denoiser tuner can patch;
    else TunerError."""
    from tuner.denoiser import DIT_CLASSES, is_flow_matching, kind_of_class

    info = _model_index(folder)
    pipeline_class = str(info.get("_class_name", "unknown"))
    found = {k: v[1] for k, v in info.items() if isinstance(v, list) and len(v) == 2 and k in DENOISER_FOLDERS}
    component = next((k for k, cls in found.items() if kind_of_class(cls) is not None), None)
    if component is None:
        others = [f"{k}={v[1]}" for k, v in info.items() if isinstance(v, list) and len(v) == 2
                  and k in ("unet", "transformer", "prior", "decoder")]
        found_text = ", ".join(others) or "no unet"
        raise TunerError(f"model.id: {folder.name} is a {pipeline_class} whose denoiser is not a {DENOISER_CLASS} "
                         f"or one of {', '.join(DIT_CLASSES)} ({found_text}); tuner's methods patch SD-1.x, SD-2.x, "
                         "SDXL, PixArt, SD3 and Flux pipelines")
    for name, entry in info.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[1] is None:
            continue
        if not (folder / name).is_dir():
            raise TunerError(f"model.id: component '{name}' of {folder.name} is missing (no folder {folder / name})")
    check_weight_files(folder / component, "model.id")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != component):
        check_weight_files(sub, "model.id")
    scheduler = info.get("scheduler")
    flow = isinstance(scheduler, list) and len(scheduler) == 2 and is_flow_matching(str(scheduler[1]))
    return pipeline_class, found[component], flow


def _model_index(folder: Path) -> dict:
    if not folder.is_dir():
        raise TunerError(f"model.id: {folder} is a file, not a diffusers pipeline folder")
    index = folder / "model_index.json"
    if not index.is_file():
        raise TunerError(f"model.id: {folder} is not a diffusers pipeline folder (no model_index.json; save one "
                         "with pipe.save_pretrained(folder))")
    try:
        info = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TunerError(f"model.id: {index} is not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise TunerError(f"model.id: {index} is not a JSON object")
    return info


def check_weight_files(folder: Path, what: str) -> None:
    """Open every weights file under `folder`: a truncated or foreign file is an error now, not mid-study."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    if folder.name in DENOISER_FOLDERS and not files:
        raise TunerError(f"{what}: {folder} holds no weights file")
    for p in files:
        check_weight_file(p, what)


def check_weight_file(path: Path, what: str) -> None:
    if path.name.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises several types for corrupt headers
            raise TunerError(f"{what}: weights file {path} is corrupt ({type(e).__name__})") from None
        _check_safetensors_length(path, what)
    elif path.stat().st_size == 0:
        raise TunerError(f"{what}: weights file {path} is empty")
    else:  # .bin/.pt/.ckpt are pickles: read as plain tensors before diffusers or transformers open them
        from tuner.weights import check_tensors_file

        check_tensors_file(path, what)


def _check_safetensors_length(path: Path, what: str) -> None:
    """The header names the byte range of every tensor: a file shorter than the last range is truncated."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if path.stat().st_size < 8 + n + end:
        raise TunerError(f"{what}: weights file {path} is truncated ({path.stat().st_size} bytes, header says "
                         f"{8 + n + end})")


def _cached_snapshot(model_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # not cached (or not a valid id): the caller decides what that means
        return None


def is_online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
