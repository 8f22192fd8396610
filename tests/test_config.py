"""anno_cfg.yml: defaults, relative paths, and one clear problem per mistake (key + fix)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from annotool import write_anno_prog

from dextr_core.config import AnnoConfig, ConfigError, load_config


def write_cfg(folder: Path, text: str, name: str = "anno_cfg.yml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    return tmp_path


MINIMAL = "required:\n  source: images\n  destination: masks\n"


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems, "a ConfigError must list its problems"
    for p in info.value.problems:
        assert str(p) in str(info.value)
    return info.value.problems


def one_problem(path: Path, key: str) -> str:
    problems = problems_of(path)
    matching = [p for p in problems if p.startswith(f"{key}:")]
    assert len(matching) == 1, problems
    return matching[0]


def test_defaults_and_relative_paths(project: Path, monkeypatch):
    cfg_path = write_cfg(project, MINIMAL)
    monkeypatch.chdir("/")  # relative paths must not depend on the working folder
    cfg = load_config(cfg_path)
    assert isinstance(cfg, AnnoConfig)
    assert cfg.path == cfg_path
    assert cfg.source == project / "images"
    assert cfg.destination == project / "masks"
    assert cfg.update is True
    assert cfg.mask_suffix == "_mask"
    assert cfg.save_format == "png"
    assert cfg.labels == ("object",)
    assert cfg.weights == project / "models" / "dextr_pascal-sbd.h5"
    assert cfg.threshold == pytest.approx(0.8)
    assert cfg.claim_timeout_min == pytest.approx(30.0)
    assert cfg.progress_file == project / "images" / ".dextr_progress.json"
    assert cfg.reset_progress is False
    assert not (project / "masks").exists(), "loading a config must not create folders"


def test_all_keys_given(project: Path, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("abs")
    cfg_path = write_cfg(project, f"""
required:
  source: ./images/
  destination: {elsewhere}/out
optional:
  update: false
  mask_suffix: ""
  save_format: NPY
  labels: [car, person, 7]
  weights: ../w/dextr_coco.h5
  threshold: 0.5
  claim_timeout_min: 2
admin:
  progress_file: state/progress.json
  reset_progress: true
""")
    cfg = load_config(cfg_path)
    assert cfg.source == project / "images"
    assert cfg.destination == elsewhere / "out"
    assert cfg.update is False
    assert cfg.mask_suffix == ""
    assert cfg.save_format == "npy"
    assert cfg.labels == ("car", "person", "7")
    assert cfg.weights == project.parent / "w" / "dextr_coco.h5"
    assert cfg.threshold == 0.5
    assert cfg.claim_timeout_min == 2.0
    # admin.progress_file is relative to required.source (DEXTR-AnnoTool's rule)
    assert cfg.progress_file == project / "images" / "state" / "progress.json"
    assert cfg.reset_progress is True


def test_empty_values_take_defaults_but_empty_suffix_means_none(project: Path):
    cfg = load_config(write_cfg(project, MINIMAL + "optional:\n  mask_suffix:\n  threshold:\n"
                                "admin:\n"))
    assert cfg.mask_suffix == ""
    assert cfg.threshold == pytest.approx(0.8)


def test_missing_file(tmp_path: Path):
    problems = problems_of(tmp_path / "nope.yml")
    assert "does not exist" in problems[0] and "nope.yml" in problems[0]


def test_not_yaml_names_the_line(project: Path):
    path = write_cfg(project, "required:\n  source: images\n destination: masks\n")
    (problem,) = problems_of(path)
    assert "not valid YAML" in problem and "line 3" in problem


def test_not_a_mapping(project: Path):
    (problem,) = problems_of(write_cfg(project, "- source\n- destination\n"))
    assert "mapping" in problem and "required" in problem
    (problem,) = problems_of(write_cfg(project, ""))
    assert "empty" in problem


def test_missing_required_keys(project: Path):
    problem = one_problem(write_cfg(project, "optional:\n  update: true\n"), "required")
    assert "source" in problem and "destination" in problem
    problem = one_problem(write_cfg(project, "required:\n  source: images\n"),
                          "required.destination")
    assert "missing" in problem


def test_wrong_types_all_reported_at_once(project: Path):
    path = write_cfg(project, MINIMAL + """optional:
  update: "yes please"
  save_format: 3
  threshold: high
  claim_timeout_min: 0
  labels: {a: 1}
  mask_suffix: 12
admin:
  reset_progress: 1
""")
    problems = problems_of(path)
    keys = {p.split(":")[0] for p in problems}
    assert keys == {
        "optional.update", "optional.save_format", "optional.threshold",
        "optional.claim_timeout_min", "optional.labels", "optional.mask_suffix",
        "admin.reset_progress",
    }
    assert "true or false" in one_problem(path, "optional.update")
    assert "use png or npy" in one_problem(path, "optional.save_format")
    assert "number" in one_problem(path, "optional.threshold")
    assert "above 0" in one_problem(path, "optional.claim_timeout_min")


def test_threshold_range(project: Path):
    for bad in ("0", "1", "1.5", "-0.2"):
        path = write_cfg(project, MINIMAL + f"optional:\n  threshold: {bad}\n")
        assert "between 0 and 1" in one_problem(path, "optional.threshold")


def test_unknown_key_suggests_the_right_one(project: Path):
    path = write_cfg(project, MINIMAL + "optional:\n  mask_sufix: _m\nadmn:\n  reset_progress: 1\n")
    assert "did you mean mask_suffix?" in one_problem(path, "optional.mask_sufix")
    assert "did you mean admin?" in one_problem(path, "admn")


def test_unknown_key_without_close_match_lists_known_keys(project: Path):
    path = write_cfg(project, MINIMAL + "optional:\n  zzz: 1\n")
    problem = one_problem(path, "optional.zzz")
    assert "save_format" in problem


def test_labels_rules(project: Path):
    path = write_cfg(project, MINIMAL + "optional:\n  labels: [car, '', car]\n")
    problems = problems_of(path)
    assert any(p.startswith("optional.labels[1]:") and "empty" in p for p in problems)
    assert any(p.startswith("optional.labels[2]:") and "twice" in p for p in problems)
    path = write_cfg(project, MINIMAL + "optional:\n  labels: []\n")
    assert "non-empty" in one_problem(path, "optional.labels")


def test_source_folder_missing(tmp_path: Path):
    path = write_cfg(tmp_path, MINIMAL)
    problem = one_problem(path, "required.source")
    assert "does not exist" in problem and str(tmp_path / "images") in problem


def test_source_is_a_file(project: Path):
    (project / "file.jpg").write_bytes(b"x")
    path = write_cfg(project, "required:\n  source: file.jpg\n  destination: masks\n")
    assert "not a folder" in one_problem(path, "required.source")


def test_destination_not_creatable(project: Path):
    (project / "blocker").write_text("a file where a folder should be")
    path = write_cfg(project, "required:\n  source: images\n  destination: blocker/masks\n")
    problem = one_problem(path, "required.destination")
    assert "cannot create" in problem and "blocker" in problem


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_destination_not_writable(project: Path):
    locked = project / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        path = write_cfg(project, "required:\n  source: images\n  destination: locked/masks\n")
        assert "cannot write" in one_problem(path, "required.destination")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("suffix", ["a/b", "..\\\\x", "/"])
def test_mask_suffix_with_path_separator(project: Path, suffix: str):
    path = write_cfg(project, MINIMAL + f'optional:\n  mask_suffix: "{suffix}"\n')
    assert "path separator" in one_problem(path, "optional.mask_suffix")


def test_destination_equal_source_png_without_suffix(project: Path):
    text = "required:\n  source: images\n  destination: ./images\noptional:\n  mask_suffix: ''\n"
    problem = one_problem(write_cfg(project, text), "optional.mask_suffix")
    assert "overwrite" in problem
    # npy masks or a suffix cannot overwrite images: both are fine
    load_config(write_cfg(project, text + "  save_format: npy\n"))
    load_config(write_cfg(project, text.replace("''", "_m")))


def test_problems_are_all_collected(project: Path):
    path = write_cfg(project, """required:
  source: missing_folder
optional:
  save_format: tif
  mask_sufix: x
""")
    keys = {p.split(":")[0] for p in problems_of(path)}
    assert {"required.source", "required.destination", "optional.save_format",
            "optional.mask_sufix"} <= keys


def test_config_error_is_a_dextr_error(tmp_path: Path):
    from dextr_core.errors import DextrError

    with pytest.raises(DextrError):
        load_config(tmp_path / "missing.yml")


# --- admin.progress_file: DEXTR-AnnoTool's rule and its progress file -------------------------


def test_progress_file_is_relative_to_the_source_folder(project: Path):
    cfg = load_config(write_cfg(project, MINIMAL + "admin:\n  progress_file: progress.json\n"))
    assert cfg.progress_file == project / "images" / "progress.json"
    assert cfg.database == str(project / "images" / "progress.json")
    assert cfg.legacy_progress_file is None


def test_a_dextr_annotool_progress_file_is_imported_and_the_store_lives_beside_it(project: Path):
    write_anno_prog(project / "images" / ".anno_prog", {"a.jpg": True}, source="images",
                    destination="masks")
    cfg = load_config(write_cfg(project, MINIMAL + "admin:\n  progress_file: .anno_prog\n"))
    assert cfg.legacy_progress_file == project / "images" / ".anno_prog"
    assert cfg.progress_file == project / "images" / ".dextr_progress.json"
    assert cfg.progress_file != cfg.legacy_progress_file
    assert not (project / ".anno_prog").exists(), "nothing is written next to the config"


def test_default_progress_file_finds_a_legacy_anno_prog_in_the_source(project: Path):
    cfg = load_config(write_cfg(project, MINIMAL))
    assert cfg.legacy_progress_file is None
    (project / "images" / ".anno_prog").write_text("annotated: {}\n")
    cfg = load_config(write_cfg(project, MINIMAL))
    assert cfg.legacy_progress_file == project / "images" / ".anno_prog"
    assert cfg.progress_file == project / "images" / ".dextr_progress.json"


def test_an_existing_store_next_to_the_config_keeps_being_used_with_a_warning(project: Path):
    (project / "state").mkdir()
    (project / "state" / "progress.json").write_text("{}")
    cfg = load_config(write_cfg(project, MINIMAL + "admin:\n  progress_file: state/progress.json\n"))
    assert cfg.progress_file == project / "state" / "progress.json"
    (warning,) = cfg.warnings
    assert "admin.progress_file" in warning and "relative to required.source" in warning


def test_the_repository_sample_config_keeps_its_progress_file():
    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "anno_cfg.yml")
    assert cfg.progress_file == repo / "samples" / "images" / ".dextr_progress.json"
    assert cfg.source == repo / "samples" / "images"
    assert cfg.max_image_pixels == 200_000_000


def test_progress_file_naming_a_folder_is_refused(project: Path):
    (project / "images" / "state").mkdir()
    path = write_cfg(project, MINIMAL + "admin:\n  progress_file: state\n")
    assert "folder" in one_problem(path, "admin.progress_file")


# --- new optional keys -------------------------------------------------------------------------


def test_max_image_megapixels_and_database(project: Path):
    cfg = load_config(write_cfg(project, MINIMAL + "optional:\n  max_image_megapixels: 1.5\n"
                                "admin:\n  database: postgresql://db.example/anno\n"))
    assert cfg.max_image_pixels == 1_500_000
    assert cfg.database == "postgresql://db.example/anno"
    path = write_cfg(project, MINIMAL + "optional:\n  max_image_megapixels: 0\n")
    assert "above 0" in one_problem(path, "optional.max_image_megapixels")
    path = write_cfg(project, MINIMAL + "admin:\n  database: mysql://x/y\n")
    assert "postgresql://" in one_problem(path, "admin.database")


# --- config at the edges -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN"])
def test_non_finite_numbers_are_refused(project: Path, value: str):
    path = write_cfg(project, MINIMAL + f"optional:\n  claim_timeout_min: {value}\n"
                     f"  threshold: {value}\n  max_image_megapixels: {value}\n")
    for key in ("optional.claim_timeout_min", "optional.threshold",
                "optional.max_image_megapixels"):
        problem = one_problem(path, key)
        assert "finite" in problem and value.lower().lstrip("-.") in problem.lower()


def test_a_duplicate_key_is_named_with_both_lines(project: Path):
    path = write_cfg(project, "required:\n  source: images\n  destination: masks\n"
                     "optional:\n  claim_timeout_min: 30\n  labels: [a]\n"
                     "  claim_timeout_min: 5\n")
    (problem,) = problems_of(path)
    assert problem.startswith("optional.claim_timeout_min:")
    assert "line 5" in problem and "line 7" in problem and "keep one" in problem


def test_a_duplicate_section_is_named_with_both_lines(project: Path):
    path = write_cfg(project, MINIMAL + "admin:\n  reset_progress: false\n"
                     "admin:\n  reset_progress: true\n")
    (problem,) = problems_of(path)
    assert problem.startswith("admin:") and "line 4" in problem and "line 6" in problem


def test_source_equal_destination_with_a_photo_named_like_a_mask_is_refused(project: Path):
    (project / "images" / "a.jpg").write_bytes(b"x")
    (project / "images" / "a_mask.png").write_bytes(b"x")  # a mask of a.jpg: fine
    text = "required:\n  source: images\n  destination: images\n"
    load_config(write_cfg(project, text))
    (project / "images" / "sub").mkdir()
    (project / "images" / "sub" / "b_mask.jpg").write_bytes(b"x")  # a photo: would be hidden
    problem = one_problem(write_cfg(project, text), "required.destination")
    assert "b_mask.jpg" in problem and "another destination" in problem
    # npy masks cannot be mistaken for photos
    load_config(write_cfg(project, text + "optional:\n  save_format: npy\n"))


def test_an_over_long_mask_suffix_is_refused_before_any_save(project: Path):
    from dextr_core.config import name_max

    limit = name_max(project)
    path = write_cfg(project, MINIMAL + f"optional:\n  mask_suffix: _{'m' * 300}\n")
    problem = one_problem(path, "optional.mask_suffix")
    assert str(limit) in problem and "short" in problem


def test_a_suffix_too_long_for_one_photo_name_names_that_photo(project: Path):
    from dextr_core.config import TEMP_NAME_MARGIN, name_max

    limit = name_max(project) - TEMP_NAME_MARGIN
    stem = "p" * (limit - len("_mask.png") - 5)
    (project / "images" / f"{stem}.jpg").write_bytes(b"x")
    load_config(write_cfg(project, MINIMAL))
    path = write_cfg(project, MINIMAL + "optional:\n  mask_suffix: _longer_mask\n")
    assert f"{stem}.jpg" in one_problem(path, "optional.mask_suffix")


def test_this_tools_own_store_under_a_yaml_like_name_is_kept_as_the_store(project: Path):
    from dextr_core.store import ProgressStore

    store = ProgressStore(project / "images" / "progress.db", project / "images")
    store.sync()
    store.close()
    cfg = load_config(write_cfg(project, MINIMAL + "admin:\n  progress_file: progress.db\n"))
    assert cfg.progress_file == project / "images" / "progress.db"
    assert cfg.legacy_progress_file is None, "it must not be imported as DEXTR-AnnoTool's file"
    assert any("this tool's progress store" in w for w in cfg.warnings)


def test_a_model_server_address_is_kept_and_anything_but_http_is_refused_with_the_fix(project):
    cfg = load_config(write_cfg(project, MINIMAL + "optional:\n  model_server: http://gpu1:8000/dextr\n"))
    assert cfg.model_server == "http://gpu1:8000/dextr"
    assert load_config(write_cfg(project, MINIMAL)).model_server == ""
    with pytest.raises(ConfigError) as err:
        load_config(write_cfg(project, MINIMAL + "optional:\n  model_server: gpu1:8000\n"))
    (problem,) = err.value.problems
    assert "optional.model_server" in problem and "http://" in problem
