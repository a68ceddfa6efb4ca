"""Publishing into the model repository: whole versions or nothing, next number each time."""

import os
import threading

import pytest

from service import model_repository


def make_export(path, marker: str = "graph"):
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_text(marker)
    (path / "variables" / "variables.index").write_text("index")
    return path


def test_versions_are_numbered_after_the_highest_existing_one(tmp_path):
    base = tmp_path / "repo" / "m"
    (base / "00000007").mkdir(parents=True)  # TF Serving reads this as version 7
    export = make_export(tmp_path / "export")
    assert model_repository.publish(export, base) == 8
    assert model_repository.publish(export, base) == 9
    assert (base / "9" / "saved_model.pb").read_text() == "graph"
    assert sorted(model_repository.list_versions(base)) == [7, 8, 9]


def test_nothing_but_whole_versions_is_left_in_the_repository(tmp_path):
    base = tmp_path / "m"
    model_repository.publish(make_export(tmp_path / "export"), base)
    assert sorted(os.listdir(base)) == ["1"]


def test_a_failed_copy_leaves_no_trace(tmp_path, monkeypatch):
    base = tmp_path / "m"
    base.mkdir()

    def disk_full(src, dst, **kwargs):
        os.makedirs(dst)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_repository.shutil, "copytree", disk_full)
    with pytest.raises(OSError, match="No space"):
        model_repository.publish(make_export(tmp_path / "export"), base)
    assert os.listdir(base) == []


def test_an_incomplete_export_is_refused(tmp_path):
    (tmp_path / "export").mkdir()
    with pytest.raises(ValueError, match=r"no saved_model\.pb"):
        model_repository.publish(tmp_path / "export", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    base = tmp_path / "m"
    exports = [make_export(tmp_path / f"export{i}", marker=str(i)) for i in range(8)]
    versions: list[int] = []
    threads = [
        threading.Thread(target=lambda e=e: versions.append(model_repository.publish(e, base)))
        for e in exports
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(versions) == list(range(1, 9))
    markers = {(base / str(v) / "saved_model.pb").read_text() for v in versions}
    assert markers == {str(i) for i in range(8)}


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("00000123", 123),
        ("0", None),
        ("-1", None),
        ("v2", None),
        (".incoming-ab", None),
        ("١٢", None),
    ],
)
def test_which_directory_names_are_versions(name, version):
    assert model_repository.version_of(name) == version
