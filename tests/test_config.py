"""Typed configuration: literal key names, defaults, merged thresholds and errors that name the key."""

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daskmeta.app.cli import app
from daskmeta.app.config import (
    CompareAnalysis,
    Config,
    MeanAnalysis,
    MultimodalAnalysis,
    Preprocess,
    Sweep,
    Threshold,
    load_config,
)
from daskmeta.errors import ConfigError
from daskmeta.null.engines import DEFAULT_ENGINE

HEAD = "studies: examples/clbp\nstore: zarr_store/test.zarr\n"


def _load(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "analysis.yaml"
    path.write_text(HEAD + body)
    return load_config(path)


def _error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, body)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "analysis.yaml")), message
    return message


@pytest.mark.parametrize("name", ["null", "on", "off", "yes", "no", "true", "1", "1.5", "Null"])
def test_analysis_names_keep_their_literal_text(tmp_path, name):
    config = _load(tmp_path, f"out: out\nanalyses:\n  {name}: {{permutations: 2}}\n")
    assert list(config.analyses) == [name]
    assert config.analyses[name].permutations == 2


def test_multimodal_of_names_literal_keys_and_values_keep_yaml_types(tmp_path):
    config = _load(tmp_path, 'analyses:\n  null: {}\n  1: {jackknife: yes}\n'
                             '  both: {type: multimodal, of: ["null", "1"]}\n')
    assert list(config.analyses) == ["null", "1", "both"]
    assert config.analyses["1"].jackknife is True  # a value: YAML's bool
    assert config.analyses["both"].of == ("null", "1")


def test_defaults_are_filled(tmp_path):
    config = _load(tmp_path, "analyses: {a: {}, c: {type: compare, groups: [x == 1, x == 2]}}\n")
    assert config.out == Path("results") and config.studies == Path("examples/clbp")
    assert config.preprocess == Preprocess(mask="gray_matter", fwhm=20.0, anisotropy=1.0, beta=1.0)
    assert config.threshold == Threshold(p=0.005, peak_z=1.0, extent=10)
    mean = config.analyses["a"]
    assert isinstance(mean, MeanAnalysis)
    assert (mean.permutations, mean.seed, mean.block_size, mean.engine) == (50, 0, 10, DEFAULT_ENGINE)
    assert (mean.where, mean.studies, mean.jackknife, mean.regressors) == (None, None, False, ())
    assert mean.uncorrected_permutations == 1000
    assert mean.threshold == config.threshold
    compare = config.analyses["c"]
    assert isinstance(compare, CompareAnalysis) and compare.groups == ("x == 1", "x == 2")
    assert config.sweep is None


def test_uncorrected_permutations_null_means_all(tmp_path):
    config = _load(tmp_path, "analyses: {a: {uncorrected_permutations: null},\n"
                             "           b: {uncorrected_permutations: 200}}\n")
    assert config.analyses["a"].uncorrected_permutations is None
    assert config.analyses["b"].uncorrected_permutations == 200


def test_types_are_normalised(tmp_path):
    config = _load(tmp_path, "preprocess: {fwhm: 15, anisotropy: 0}\nthreshold: {p: 0.01}\n"
                             "analyses: {a: {studies: [s1, s2], regressors: [age]}}\n")
    assert config.preprocess.fwhm == 15.0 and isinstance(config.preprocess.fwhm, float)
    assert config.analyses["a"].studies == ("s1", "s2")
    assert config.analyses["a"].regressors == ("age",)


def test_analysis_threshold_is_merged_over_the_top_level_one(tmp_path):
    config = _load(tmp_path, "threshold: {p: 0.01, extent: 20}\nanalyses:\n"
                             "  a: {threshold: {peak_z: 2}}\n  b: {}\n"
                             "  m: {type: multimodal, of: [a, b], threshold: {extent: 5}}\n")
    assert config.analyses["a"].threshold == Threshold(p=0.01, peak_z=2.0, extent=20)
    assert config.analyses["b"].threshold == Threshold(p=0.01, peak_z=1.0, extent=20)
    assert isinstance(config.analyses["m"], MultimodalAnalysis)
    assert config.analyses["m"].threshold == Threshold(p=0.01, peak_z=1.0, extent=5)


def test_sections_are_frozen(tmp_path):
    config = _load(tmp_path, "analyses: {a: {}}\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.out = Path("elsewhere")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.analyses["a"].permutations = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threshold.p = 0.5
    with pytest.raises(TypeError):
        config.analyses["b"] = config.analyses["a"]  # the mapping is read-only too
    faster = dataclasses.replace(config.analyses["a"], permutations=2)
    assert faster.permutations == 2 and config.analyses["a"].permutations == 50


def test_sweep_section(tmp_path):
    config = _load(tmp_path, "sweep:\n  name: kernel\n"
                             "  analysis: {where: \"modality == 'ReHo'\", seed: 1}\n"
                             "  grid: {fwhm: [10, 15], p: [0.005]}\n"
                             "  subsets: {leave_out: 1, random: {n: 3}}\n")
    assert isinstance(config.sweep, Sweep) and not config.analyses
    assert config.sweep.grid.fwhm == (10.0, 15.0) and config.sweep.grid.anisotropy is None
    assert config.sweep.as_dict() == {
        "name": "kernel",
        "analysis": {"where": "modality == 'ReHo'", "permutations": 50, "seed": 1, "block_size": 10,
                     "type": "mean"},
        "grid": {"fwhm": [10.0, 15.0], "p": [0.005]},
        "subsets": {"where": [], "leave_out": 1, "random": {"n": 3, "fraction": 0.8, "seed": 0}},
    }


@pytest.mark.parametrize(("body", "key", "known"), [
    ("bogus: 1\nanalyses: {a: {}}\n", "'bogus'", "studies, store, out"),
    ("on: 1\nanalyses: {a: {}}\n", "'on'", "studies, store, out"),
    ("preprocess: {fwhm: 10, kernel: 2}\nanalyses: {a: {}}\n", "'preprocess.kernel'", "mask, fwhm"),
    ("threshold: {pvalue: 0.01}\nanalyses: {a: {}}\n", "'threshold.pvalue'", "p, peak_z, extent"),
    ("analyses: {reho: {permutatons: 3}}\n", "'analyses.reho.permutatons'", "permutations"),
    ("analyses: {c: {type: compare, groups: [a, b], jackknife: true}}\n", "'analyses.c.jackknife'",
     "groups"),
    ("analyses: {m: {type: multimodal, of: [a, b], seed: 1}, a: {}, b: {}}\n", "'analyses.m.seed'", "of"),
    ("analyses: {a: {threshold: {size: 3}}}\n", "'analyses.a.threshold.size'", "p, peak_z, extent"),
    ("sweep: {grid: {kernel: [1]}}\n", "'sweep.grid.kernel'", "fwhm, anisotropy"),
    ("sweep: {analysis: {engine: reference}}\n", "'sweep.analysis.engine'", "permutations"),
    ("sweep: {subsets: {random: {count: 3}}}\n", "'sweep.subsets.random.count'", "n, fraction, seed"),
])
def test_unknown_keys_name_the_key_and_the_known_ones(tmp_path, body, key, known):
    message = _error(tmp_path, body)
    assert f"unknown key {key}" in message and known in message


def test_unknown_key_suggests_the_close_one(tmp_path):
    assert "did you mean 'permutations'?" in _error(tmp_path, "analyses: {reho: {permutatons: 3}}\n")


@pytest.mark.parametrize(("body", "expected"), [
    ("analyses: {x: {permutations: many}}\n", "'analyses.x.permutations' must be a whole number, got 'many'"),
    ("analyses: {x: {permutations: 2.5}}\n", "'analyses.x.permutations' must be a whole number, got 2.5"),
    ("analyses: {x: {permutations: 0}}\n", "'analyses.x.permutations' must be a whole number >= 1, got 0"),
    ("analyses: {x: {uncorrected_permutations: 0}}\n",
     "'analyses.x.uncorrected_permutations' must be a whole number >= 1, got 0"),
    ("analyses: {x: {jackknife: maybe}}\n", "'analyses.x.jackknife' must be true or false, got 'maybe'"),
    ("analyses: {x: {where: 5}}\n", "'analyses.x.where' must be text, got 5"),
    ("analyses: {x: {regressors: age}}\n", "'analyses.x.regressors' must be a list of study columns"),
    ("threshold: {extent: 1.5}\nanalyses: {x: {}}\n", "'threshold.extent' must be a whole number, got 1.5"),
    ("preprocess: {fwhm: true}\nanalyses: {x: {}}\n", "'preprocess.fwhm' must be a number, got true"),
    ("preprocess: {mask: grey}\nanalyses: {x: {}}\n", "'preprocess.mask' must be one of 'gray_matter'"),
    ("preprocess: 5\nanalyses: {x: {}}\n", "'preprocess' must be a mapping with keys mask, fwhm"),
    ("store: [a]\nanalyses: {x: {}}\n",  # the last 'store' wins, as in YAML
     "'store' must be the Zarr store to write, e.g. zarr_store/my.zarr, got ['a']"),
    ("analyses: {x: {type: median}}\n", "'analyses.x.type' must be one of 'mean', 'compare', 'multimodal'"),
    ("analyses: {x: }\n", "'analyses.x' must be a mapping of settings, got null"),
    ("analyses: {}\n", "'analyses' must be a mapping of analysis names to their settings"),
    ("analyses: {a b: {}}\n", "name 'a b', which must be text made of letters, digits"),
    ("analyses: {x: {type: compare, groups: [a]}}\n", "'analyses.x.groups' must be two study filters"),
    ("analyses: {x: {type: compare}}\n", "'analyses.x.groups' is missing"),
    ("analyses: {m: {type: multimodal, of: [x, y]}}\n", "'analyses.m.of' names 'x', which is not a mean"),
    ("analyses: {a: {}, c: {type: compare, groups: [x, y]}, m: {type: multimodal, of: [a, c]}}\n",
     "'analyses.m.of' names 'c', which is not a mean"),
    ("sweep: {name: 'a b'}\n", "'sweep.name' must be text made of letters"),
    ("sweep: {grid: {fwhm: []}}\n", "'sweep.grid.fwhm' must be a list (each item a number) with at least"),
    ("sweep: {grid: {extent: [5, 5.5]}}\n", "'sweep.grid.extent[1]' must be a whole number, got 5.5"),
    ("sweep: {analysis: {type: compare}}\n", "'sweep.analysis.type' must be 'mean'"),
    ("sweep: {subsets: {leave_out: 0}}\n", "'sweep.subsets.leave_out' must be a whole number >= 1, got 0"),
    ("sweep: {subsets: {random: {fraction: 1.5}}}\n",
     "'sweep.subsets.random.fraction' must be a number in (0, 1), got 1.5"),
    ("sweep: {}\nanalyses: {a: {}}\n", "give either 'analyses' (daskmeta run) or 'sweep'"),
    ("out: results\n", "give either 'analyses' (daskmeta run) or 'sweep'"),
])
def test_wrong_values_name_key_expectation_and_value(tmp_path, body, expected):
    assert expected in _error(tmp_path, body)


def test_text_expected_where_yaml_read_another_type_says_to_quote(tmp_path):
    message = _error(tmp_path, "analyses:\n  a: {}\n  m: {type: multimodal, of: [a, null]}\n")
    assert "'analyses.m.of[1]' must be text, got null (write it in quotes" in message


def test_missing_required_keys(tmp_path):
    path = tmp_path / "analysis.yaml"
    path.write_text("store: s.zarr\nanalyses: {a: {}}\n")
    with pytest.raises(ConfigError, match="'studies' is missing"):
        load_config(path)


def test_not_a_mapping_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "analysis.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys"):
        load_config(path)
    path.write_text("analyses: {a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("engine", ["cuda", "numba", "1"])
def test_bad_engine_lists_the_allowed_ones(tmp_path, engine):
    message = _error(tmp_path, f"analyses: {{x: {{engine: {engine}}}}}\n")
    assert "'analyses.x.engine' must be one of 'permutation', 'reference'" in message
    if engine == "numba":  # a retired engine says what to use instead
        assert "use 'permutation'" in message


def test_engines(tmp_path):
    config = _load(tmp_path, "analyses: {a: {engine: reference}, c: {type: compare, groups: [x, y], "
                             "engine: permutation}}\n")
    assert config.analyses["a"].engine == "reference" and config.analyses["c"].engine == "permutation"


def test_cli_unknown_key_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "analysis.yaml"
    path.write_text(HEAD + "analyses: {reho: {permutatons: 3}}\n")
    result = CliRunner().invoke(app, ["run", str(path), "--scheduler", "synchronous"])
    assert result.exit_code == 2
    assert "unknown key 'analyses.reho.permutatons'" in result.output
    assert not (tmp_path / "zarr_store").exists()


def test_stored_results_are_reused_where_uncorrected_permutations_changes_nothing():
    from daskmeta.app.workflow import _analysis_key

    attrs = {"studies_hash": "abc", "fwhm": 20.0, "anisotropy": 1.0, "beta": 1.0, "mask": "gray_matter"}
    threshold = {"p": 0.005}

    def key(**settings):
        return _analysis_key(MeanAnalysis(**settings), attrs, threshold)

    # 50 randomizations: the voxel null runs all of them whatever the setting
    assert key(permutations=50) == key(permutations=50, uncorrected_permutations=None)
    assert key(permutations=1000) == key(permutations=1000, uncorrected_permutations=5000)
    # 2000: the default stops the voxel null at 1000, so the result differs from an uncapped one
    assert key(permutations=2000) != key(permutations=2000, uncorrected_permutations=None)
    assert key(permutations=2000) != key(permutations=2000, uncorrected_permutations=500)


def test_jackknife_and_regressions_of_a_mean_stop_where_its_voxel_null_does():
    from daskmeta.app.workflow import uncorrected_permutations

    assert uncorrected_permutations(MeanAnalysis(permutations=5000)) == 1000
    assert uncorrected_permutations(MeanAnalysis(permutations=50)) == 50
    assert uncorrected_permutations(MeanAnalysis(permutations=5000, uncorrected_permutations=None)) == 5000
    assert uncorrected_permutations(MeanAnalysis(permutations=5000, uncorrected_permutations=300)) == 300
    # a comparison has no family-wise null to split from: all its randomizations
    assert uncorrected_permutations(CompareAnalysis(permutations=5000, groups=("a == 1", "a == 2"))) == 5000
