"""NiMARE Studyset (NIMADS) JSON: the reader, the writer and the export of a store.

docs/methods.md, section 1.2 (readers) and section 3.8 (statistical maps). The Studyset
below is modelled on NiMARE's shipped ``nidm_pain_studyset.json``: studies ``pain_NN.nidm``
with one analysis ``1``, images of value types ``beta``, ``se`` and ``t`` whose ``url`` is
relative (``pain_01.nidm/TStatistic.nii.gz``) and mostly not shipped, points in ``MNI``
without values, and ``metadata.sample_sizes`` of one entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_io_statmap import AFFINE_3MM, SHAPE_3MM, blob, write_map
from typer.testing import CliRunner

from daskmeta.analyses.recreate import study_coords
from daskmeta.app.cli import app
from daskmeta.errors import DaskmetaWarning, InputError, StoreError
from daskmeta.io import load_studies, read_nimads, read_tables, studyset_from_maps, write_studyset_json
from daskmeta.io.nimads import NAME_KEY, is_nimads
from daskmeta.io.store import write_group

runner = CliRunner()

PAIN_POINTS = {
    "pain_01.nidm": [[48.0, -38.0, -24.0], [-50.0, -42.0, -24.0], [-56.0, -62.0, -6.0]],
    "pain_02.nidm": [[-2.0, -104.0, -2.0], [12.0, -106.0, 2.0]],
    "pain_03.nidm": [[26.0, -80.0, -48.0]],
}


def pain_studyset(folder: Path) -> Path:
    """A Studyset shaped like NiMARE's pain studyset; pain_01's t image is on disk."""
    studies = []
    for number, (sid, points) in enumerate(PAIN_POINTS.items(), 1):
        images = [
            {"url": f"{sid}/Contrast.nii.gz", "filename": "Contrast.nii.gz", "space": "MNI",
             "value_type": "beta"},
            {"url": f"{sid}/ContrastStandardError.nii.gz", "filename": "ContrastStandardError.nii.gz",
             "space": "MNI", "value_type": "se"},
            {"url": f"{sid}/TStatistic.nii.gz", "filename": "TStatistic.nii.gz", "space": "MNI",
             "value_type": "t"},
        ]
        studies.append({
            "id": sid, "name": sid, "authors": "", "publication": "", "metadata": {},
            "analyses": [{
                "id": "1", "name": "1", "conditions": [{"name": "default", "description": ""}],
                "weights": [1.0], "images": images,
                "points": [{"space": "MNI", "coordinates": xyz} for xyz in points],
                "metadata": {"sample_sizes": [20 + number]},
            }],
        })
    path = folder / "nidm_pain_studyset.json"
    path.write_text(json.dumps({"id": "nimads_from_dataset", "name": "", "studies": studies},
                               indent=2))
    write_map(folder / "pain_01.nidm" / "TStatistic.nii.gz", dof=20)
    return path


def test_pain_studyset(tmp_path):
    path = pain_studyset(tmp_path)
    assert is_nimads(path)
    with pytest.warns(DaskmetaWarning) as record:
        studies = load_studies(path)
    messages = [str(w.message) for w in record]
    assert studies.names == ["pain_01.nidm-1", "pain_02.nidm-1", "pain_03.nidm-1"]
    assert studies.studies["n1"].tolist() == [21.0, 22.0, 23.0]
    assert studies.studies["n2"].isna().all()
    # pain_01's t image is on disk: it is used, its points dropped (one warning)
    assert studies.image_studies == ["pain_01.nidm-1"]
    assert studies.studies.loc[0, "map"] == str(tmp_path / "pain_01.nidm" / "TStatistic.nii.gz")
    assert studies.studies["map_stat"].tolist() == ["t", "", ""]
    dropped = [m for m in messages if "the map is used" in m]
    assert len(dropped) == 1 and "study 'pain_01.nidm-1'" in dropped[0]
    # the other two name images that are not on disk: one warning lists both
    missing = [m for m in messages if "not on disk" in m]
    assert missing == [
        f"2 statistical map(s) named in {path} are not on disk; those studies use their peaks "
        f"instead: study 'pain_02.nidm-1': {tmp_path / 'pain_02.nidm' / 'TStatistic.nii.gz'}; "
        f"study 'pain_03.nidm-1': {tmp_path / 'pain_03.nidm' / 'TStatistic.nii.gz'}"]
    # points without values are positive peaks of unknown value, at t_thr
    assert studies.peaks.groupby("study").size().to_dict() == {"pain_02.nidm-1": 2,
                                                                "pain_03.nidm-1": 1}
    t_thr = studies.studies.set_index("study")["t_thr"]
    np.testing.assert_allclose(studies.peaks["t"], t_thr[studies.peaks["study"]].to_numpy())
    np.testing.assert_array_equal(studies.peaks[["x", "y", "z"]].to_numpy(),
                                  PAIN_POINTS["pain_02.nidm"] + PAIN_POINTS["pain_03.nidm"])


def _analysis(aid, points=(), images=(), **metadata):
    return {"id": aid, "name": aid, "conditions": [], "weights": [], "images": list(images),
            "points": list(points), "metadata": metadata}


def _write(folder: Path, studies: list[dict]) -> Path:
    path = folder / "studyset.json"
    path.write_text(json.dumps({"id": "x", "name": "x", "studies": studies}, indent=1))
    return path


def test_values_spaces_and_sample_sizes(tmp_path):
    points = [
        {"coordinates": [10, 12, 14], "space": "MNI", "values": [{"kind": "T", "value": 4.5}]},
        {"coordinates": [-20, 30, -10], "space": "MNI152_2mm", "values": [{"kind": "z", "value": -3.1}]},
        {"coordinates": [30, -40, 50], "space": "TAL",
         "values": [{"kind": "p", "value": 0.001}, {"kind": "t_stat", "value": 3.3}]},
    ]
    path = _write(tmp_path, [
        {"id": "s1", "metadata": {"sample_sizes": [20, 18], "age": 31},
         "analyses": [_analysis("a", points, t_thr=3.0, modality="VBM"),
                      _analysis("b", [], sample_sizes=[30], age=40, t_thr=3.1)]},
        {"id": "s2", "metadata": {"sample_size": 25},
         "analyses": [_analysis("c", [{"coordinates": [0, -50, 20], "space": None,
                                       "values": [{"kind": "T", "value": 3.9}]}], t_thr=3.2)]},
    ])
    with pytest.warns(DaskmetaWarning, match=r"points without a space read as MNI, in 1 study: "
                      r"'s2-c'"):
        studies = read_nimads(path)
    table = studies.studies.set_index("study")
    assert table.loc["s1-a", ["n1", "n2"]].tolist()[0] == 20 and table.loc["s1-a", "n2"] == 18
    assert table.loc["s1-b", "n1"] == 30 and np.isnan(table.loc["s1-b", "n2"])
    assert table.loc["s2-c", "n1"] == 25  # the study's sample_size
    assert np.isnan(table.loc["s2-c", "age"])
    assert table.loc["s1-a", "age"] == 31.0 and table.loc["s1-b", "age"] == 40.0
    assert table.loc["s1-a", "modality"] == "VBM" and table["modality"].isna().sum() == 2
    peaks = studies.peaks_of("s1-a")
    assert peaks["space"].tolist() == ["spm_mni", "spm_mni", "other_tal"]
    assert peaks["t"].iloc[0] == 4.5 and peaks["t"].iloc[2] == 3.3 and peaks["t"].iloc[1] < -3.1
    assert studies.peaks_of("s1-b").empty and studies.image_studies == []  # a null study


@pytest.mark.parametrize(("change", "field", "message"), [
    (lambda a: a["metadata"].pop("sample_sizes"), "sample_sizes", "has no sample sizes"),
    (lambda a: a["metadata"].update(sample_sizes=[1, 2, 3]), "sample_sizes", "one .* or two"),
    (lambda a: a["points"][0].update(coordinates=[1, 2]), "points[0].coordinates", r"\[x, y, z\]"),
    (lambda a: a["points"][0].update(coordinates=[1, "b", 2]), "points[0].coordinates",
     "expected a number"),
    (lambda a: a["points"][0].update(space="ICBM452"), "points[0].space", "unknown space"),
    (lambda a: a["points"][0].update(coordinates=[10, 200, 0]), "y", "outside the MNI152 2 mm grid"),
    (lambda a: a.update(points=[], images=[{"url": "gone.nii.gz", "value_type": "T map"}]), "map",
     r"study 's1-a' has no peaks and its statistical map .*gone\.nii\.gz is not on disk"),
])
def test_bad_studysets_name_file_line_and_field(tmp_path, change, field, message):
    analysis = _analysis("a", [{"coordinates": [10, 12, 14], "space": "MNI",
                                "values": [{"kind": "T", "value": 4.5}]}],
                         sample_sizes=[20, 18], t_thr=3.0)
    change(analysis)
    path = _write(tmp_path, [{"id": "s0", "analyses": [_analysis("z", [], sample_sizes=[9], t_thr=3)]},
                             {"id": "s1", "analyses": [analysis]}])
    with pytest.raises(InputError, match=message) as caught:
        read_nimads(path)
    assert caught.value.path == str(path) and caught.value.field == field
    line = path.read_text().splitlines()[caught.value.line - 1]
    assert line.strip() == '"id": "a",'  # the line of the analysis' id, in study s1


def study_set(tmp_path):
    """Peak studies (MNI and Talairach, unknown values), a null study, a t-map and a z-map."""
    folder = tmp_path / "tables"
    write_map(folder / "b.nii.gz", dof=36)
    write_map(folder / "z.nii", blob(SHAPE_3MM), AFFINE_3MM, dof=None)
    (folder / "studies.tsv").write_text(
        "study\tn1\tn2\tt_thr\tmap\tmap_stat\tage\tmodality\n"
        "pain-1\t20\t18\t3.2\t\t\t30.5\tVBM\n"
        "pain-2\t21\t\t3.3\t\t\t\t\n"
        "b\t20\t18\t3.1\tb.nii.gz\t\t41\tfMRI\n"
        "zed\t16\t16\t3.0\tz.nii\tz\t25\tVBM\n"
        "null\t12\t12\t3.5\t\t\t33\tVBM\n")
    (folder / "peaks.tsv").write_text(
        "study\tx\ty\tz\tstat\tspace\n"
        "pain-1\t10\t12\t14\t4.5\tspm_mni\n"
        "pain-1\t-20\t30\t-10\tn\tspm_mni\n"
        "pain-2\t30\t-40\t50\t3.7\tother_tal\n")
    with pytest.warns(DaskmetaWarning, match="unknown value"):
        return read_tables(folder / "studies.tsv")


def test_round_trip(tmp_path):
    original = study_set(tmp_path)
    path = write_studyset_json(original, tmp_path / "out.json")
    document = json.loads(path.read_text())
    assert [s["id"] for s in document["studies"]] == ["pain", "b", "zed", "null"]
    assert [a["id"] for a in document["studies"][0]["analyses"]] == ["1", "2"]
    first = document["studies"][0]["analyses"][0]
    assert first["metadata"]["sample_sizes"] == [20, 18] and first["metadata"][NAME_KEY] == "pain-1"
    assert first["points"][0] == {"coordinates": [10.0, 12.0, 14.0], "space": "MNI", "kind": None,
                                  "values": [{"kind": "T", "value": 4.5}]}
    image = document["studies"][2]["analyses"][0]["images"][0]
    assert image == {"url": str(tmp_path / "tables" / "z.nii"), "filename": "z.nii",
                     "space": "MNI", "value_type": "z", "metadata": {}}
    back = read_nimads(path)  # no warning: every value is known, every map exists
    pd.testing.assert_frame_equal(back.studies, original.studies)
    columns = ["study", "x", "y", "z", "t"]
    pd.testing.assert_frame_equal(back.peaks[columns], original.peaks[columns])
    assert back.peaks["space"].eq("spm_mni").all()


def test_round_trip_keeps_names_and_order(tmp_path):
    original = study_set(tmp_path)
    names = {"pain-1": "a-1", "pain-2": "b", "b": "a-2", "zed": "a", "null": "a-1-x"}
    original.studies["study"] = original.studies["study"].map(names)
    original.peaks["study"] = original.peaks["study"].map(names)
    path = write_studyset_json(original, tmp_path / "out.json")
    ids = [(s["id"], [a["id"] for a in s["analyses"]]) for s in json.loads(path.read_text())["studies"]]
    assert ids == [("a", ["1"]), ("b", ["1"]), ("a_2", ["2", "1"]), ("a-1", ["x"])]
    back = read_nimads(path)
    assert back.names == ["a-1", "b", "a-2", "a", "a-1-x"]
    # without the recorded names, NiMARE's keys study_id-analysis_id
    document = json.loads(path.read_text())
    for study in document["studies"]:
        for analysis in study["analyses"]:
            analysis["metadata"].pop(NAME_KEY)
    path.write_text(json.dumps(document))
    assert read_nimads(path).names == ["a-1", "b-1", "a_2-2", "a_2-1", "a-1-x"]


def test_nimare_reads_the_export(tmp_path):
    """NiMARE's own Studyset reader (where NiMARE is installed: the bench extra)."""
    nimads = pytest.importorskip("nimare.nimads", exc_type=ImportError)
    original = study_set(tmp_path)
    path = write_studyset_json(original, tmp_path / "out.json")
    studyset = nimads.Studyset(str(path))
    analyses = {analysis.metadata[NAME_KEY]: analysis for study in studyset.studies
                for analysis in study.analyses}
    assert sorted(analyses) == sorted(original.names)  # NiMARE sorts by id
    for name, analysis in analyses.items():
        row = original.studies.set_index("study").loc[name]
        assert len(analysis.points) == len(original.peaks_of(name))
        sizes = [row["n1"]] if np.isnan(row["n2"]) else [row["n1"], row["n2"]]
        assert analysis.metadata["sample_sizes"] == sizes
        urls = [image.url for image in analysis.images]
        assert urls == ([row["map"]] if row["map"] else [])


def store_group(studies) -> xr.Dataset:
    """A studies group as the store keeps it: table columns as coordinates, peaks in attrs."""
    n = len(studies)
    return xr.Dataset(
        {"effect": (("study", "voxel"), np.zeros((n, 3), np.float32))},
        coords={"study": studies.names, **study_coords(studies.studies),
                "is_image": ("study", np.array([bool(m) for m in studies.studies["map"]]))},
        attrs={"mask": "gray_matter", "study_columns": list(studies.studies.columns), "peaks": [
            [str(p.study), float(p.x), float(p.y), float(p.z), float(p.t)]
            for p in studies.peaks.itertuples(index=False)]},
    )


def test_studyset_from_maps(tmp_path):
    original = study_set(tmp_path)
    rebuilt = studyset_from_maps(store_group(original))
    pd.testing.assert_frame_equal(rebuilt.studies, original.studies)
    columns = ["study", "x", "y", "z", "t"]
    pd.testing.assert_frame_equal(rebuilt.peaks[columns], original.peaks[columns])
    with pytest.raises(StoreError, match=r"records no peaks"):
        studyset_from_maps(store_group(original).drop_attrs())


def test_cli_export_nimare(tmp_path):
    original = study_set(tmp_path)
    store = tmp_path / "s.zarr"
    write_group(store_group(original), store, "studies")
    out = tmp_path / "peers" / "studyset.json"
    result = runner.invoke(app, ["export", str(store), "--nimare", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and not (tmp_path / "results").exists()
    back = load_studies(out)
    pd.testing.assert_frame_equal(back.studies, original.studies)
    pd.testing.assert_frame_equal(back.peaks[["study", "x", "y", "z", "t"]],
                                  original.peaks[["study", "x", "y", "z", "t"]])
    # neither GROUP nor --nimare: a usage error
    result = runner.invoke(app, ["export", str(store)])
    assert result.exit_code == 2 and "--nimare" in result.output
    # a store written without peaks: exit 2, nothing written
    group = store_group(original)
    group.attrs.pop("peaks")
    write_group(group, tmp_path / "old.zarr", "studies")
    other = tmp_path / "other" / "x.json"
    result = runner.invoke(app, ["export", str(tmp_path / "old.zarr"), "--nimare", str(other)])
    assert result.exit_code == 2 and "records no peaks" in result.output
    assert not other.parent.exists()


def test_studyset_from_maps_keeps_the_table_order_whatever_the_coordinate_order(tmp_path):
    original = study_set(tmp_path)
    group = store_group(original)
    coords = {name: (group.coords[name].dims, group.coords[name].values)
              for name in reversed(list(group.coords))}
    scrambled = xr.Dataset({"effect": (("study", "voxel"), group.effect.values)}, coords=coords,
                           attrs=group.attrs)
    assert list(scrambled.coords) != list(group.coords)
    rebuilt = studyset_from_maps(scrambled)
    assert list(rebuilt.studies.columns) == list(original.studies.columns)
