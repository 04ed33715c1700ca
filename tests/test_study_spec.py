"""Study TOML parsing: every bad input is a one-line TunerError before anything is created."""

from pathlib import Path

import pytest

from tuner.cli import main
from tuner.errors import TunerError
from tuner.study.spec import load_spec

STUDIES = Path(__file__).resolve().parent.parent / "studies"

GOOD = """
name = "s1"
n_trials = 4
[image_set]
n_images = 8
steps = 10
[constraints]
max_fid_increase = 20
[sampler]
name = "tpe"
[space.tome]
ratio = [0.2, 0.6]
[space.deepcache]
"""


def _write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["quick.toml", "default.toml", "bench_samplers.toml"])
def test_shipped_studies_load(name):
    spec = load_spec(STUDIES / name)
    assert spec.n_trials >= 1 and spec.objectives[:2] == ("latency", "fid")
    assert spec.storage.startswith("sqlite:///")


def test_defaults_and_storage_next_to_toml(tmp_path):
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.storage == f"sqlite:///{(tmp_path / 's1.db').resolve()}"
    assert spec.directions == ["minimize", "minimize"]
    assert spec.constraints.max_fid_increase == 20.0
    assert spec.evaluator.cheap_reject_images == 8
    assert not any(tmp_path.glob("*.db"))  # loading creates nothing


def test_relative_sqlite_and_other_urls(tmp_path):
    (tmp_path / "dbs").mkdir()
    spec = load_spec(_write(tmp_path, 'storage = "sqlite:///dbs/x.db"\n' + GOOD))
    assert spec.storage == f"sqlite:///{(tmp_path / 'dbs' / 'x.db').resolve()}"
    spec = load_spec(_write(tmp_path, 'storage = "postgresql://u:p@db.example/tuner"\n' + GOOD))
    assert spec.storage == "postgresql://u:p@db.example/tuner"


def test_with_n_trials_override(tmp_path):
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.with_n_trials(9).n_trials == 9
    with pytest.raises(TunerError, match="n-trials"):
        spec.with_n_trials(0)


@pytest.mark.parametrize("text, match", [
    ("name = \n", "not valid TOML"),
    ("colour = 1\n" + GOOD, "unknown key"),
    (GOOD + "[evaluator]\nlatency_imgs = 3\n", r"unknown key.*\[evaluator\]"),
    (GOOD.replace('"tpe"', '"annealing"'), "unknown sampler 'annealing'"),
    (GOOD + "[space.warp]\n", "unknown method"),
    (GOOD.replace("n_trials = 4", "n_trials = 0"), "n_trials=0 is out of range"),
    (GOOD.replace("n_images = 8", "n_images = 1"), "n_images=1 is out of range"),
    (GOOD.replace("max_fid_increase = 20", "max_fid_increase = -5"), "max_fid_increase=-5 is out of range"),
    (GOOD.replace("ratio = [0.2, 0.6]", "ratio = [0.2, 3.0]"), "ratio"),
    ('objectives = ["latency", "psnr"]\n' + GOOD, "unknown objective"),
    ('name = "a b"\n' + GOOD.replace('name = "s1"', ""), "name="),
    ('storage = "sqlite:///no/such/dir/x.db"\n' + GOOD, "does not exist"),
    ('storage = "not a url"\n' + GOOD, "not a valid SQLAlchemy URL"),
    (GOOD + '[model]\nid = "/nowhere/sd15"\n', "no such model folder"),
    (GOOD + '[model]\nthreads = 0\n', "threads=0 is out of range"),
    (GOOD + '[evaluator]\nfeature_extractor = "inception"\n', "needs evaluator.inception_weights"),
    (GOOD + '[evaluator]\nfeature_extractor = "inception"\ninception_weights = "pt_inception.pth"\n',
     "inception_weights: file not found"),
    ("space = 3\n" + GOOD.replace("[space.tome]\nratio = [0.2, 0.6]\n[space.deepcache]\n", ""),
     r"\[space\] must be a table"),
    (GOOD.replace('name = "tpe"', 'name = "nsga2"\noptions = {population_size = 1}'), "sampler"),
    (GOOD.replace('name = "tpe"', 'name = "tpe"\noptions = {bogus = 1}'), "unknown option"),
])
def test_bad_study_files(tmp_path, text, match):
    with pytest.raises(TunerError, match=match) as e:
        load_spec(_write(tmp_path, text))
    assert "\n" not in str(e.value)
    assert not any(tmp_path.rglob("*.db"))


def test_empty_space_is_the_default_joint_space(tmp_path):
    from tuner.search_spaces.defaults import default_families

    text = GOOD.replace("[space.tome]\nratio = [0.2, 0.6]\n[space.deepcache]\n", "")
    assert load_spec(_write(tmp_path, text)).space == default_families(["latency", "fid"])
    spec = load_spec(_write(tmp_path, 'objectives = ["latency", "fid", "bitops"]\n' + text))
    assert "quant" in spec.space and "quant" in spec.methods


def test_missing_file(tmp_path):
    with pytest.raises(TunerError, match="not found"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize("argv", [["study", "run"], ["study", "status"], ["study", "pareto"], ["dashboard"]])
def test_cli_bad_toml_exit_2_nothing_written(tmp_path, capsys, argv):
    bad = _write(tmp_path, GOOD.replace('"tpe"', '"annealing"'))
    assert main(argv + [str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown sampler" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_cli_status_of_missing_study_creates_nothing(tmp_path, capsys):
    good = _write(tmp_path, GOOD)
    assert main(["study", "status", str(good)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_cuda_study_without_gpu_runs_nowhere_but_reads_fine(tmp_path, capsys):
    """A study asking for CUDA on a machine without one: `run` refuses before any database exists, while
    the TOML itself stays loadable (status, pareto, export of a study run elsewhere)."""
    path = _write(tmp_path, GOOD + '[model]\ndevice = "cuda"\n')
    assert load_spec(path).model.device == "cuda"
    assert main(["study", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA is not available" in err and "\n" not in err
    assert not any(tmp_path.rglob("*.db"))


def test_full_study_searches_every_method_with_bitops():
    from tuner.config import method_specs

    spec = load_spec(STUDIES / "full.toml")
    unet_methods = {n for n, s in method_specs().items() if s.config_cls.fits("UNet2DConditionModel", False)}
    assert set(spec.methods) == unet_methods and "bitops" in spec.objectives
    assert spec.sampler.warm_start and spec.space["catome"]["checkpoints"] == "profile"


def test_old_proxy_set_table_still_loads(tmp_path):
    """`[proxy_set]` was renamed `[image_set]` ("proxy" names the model): older study files keep working,
    and a file with both is refused rather than one silently winning."""  # old name
    old = load_spec(_write(tmp_path, GOOD.replace("[image_set]", "[proxy_set]")))
    assert (old.image_set.n_images, old.image_set.steps) == (8, 10)
    both = GOOD.replace("[constraints]", "[proxy_set]\nn_images = 4\n[constraints]")  # old name
    with pytest.raises(TunerError, match=r"\[proxy_set\] is the old name of \[image_set\]"):
        load_spec(_write(tmp_path, both, "both.toml"))
