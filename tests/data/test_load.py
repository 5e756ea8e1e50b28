import hashlib
import json

import numpy as np
import pytest

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.load import DATASET_FORMATS, load_dataset


def p5_folder(path, sequences="1 1 2 3\n2 2 3 1\n"):
    path.mkdir()
    (path / "sequential_data.txt").write_text(sequences)
    datamaps = {"id2user": {"1": "U1", "2": "U2"}, "id2item": {"1": "A", "2": "B", "3": "C"}}
    (path / "datamaps.json").write_text(json.dumps(datamaps))
    return path


def letter_folder(path):
    path.mkdir()
    (path / "X.inter.json").write_text(json.dumps({"7": [0, 1, 0]}))
    (path / "X.item.json").write_text(json.dumps({"0": {"title": "a"}, "1": {"title": "b"}}))
    return path


def test_registered_formats():
    assert {"p5", "letter"} <= set(DATASET_FORMATS.names())


def test_loads_each_format_with_name_and_provenance(tmp_path):
    p5 = load_dataset("p5", p5_folder(tmp_path / "p"), name="mine")
    assert p5.name == "mine" and p5.num_users == 2 and p5.num_items == 3
    letter = load_dataset("letter", str(letter_folder(tmp_path / "l")))
    assert letter.name == "l" and letter.user_ids == ("7",)
    for ds, files in ((p5, ["sequential_data.txt", "datamaps.json"]),
                      (letter, ["X.inter.json", "X.item.json"])):
        folder = tmp_path / ("p" if ds is p5 else "l")
        expected = {
            str((folder / f).resolve()): hashlib.sha256((folder / f).read_bytes()).hexdigest()
            for f in files
        }
        assert dict(ds.source_files) == expected


def test_bid_seed_controls_the_simulated_bids(tmp_path):
    folder = p5_folder(tmp_path / "p")
    a = load_dataset("p5", folder, bid_seed=1).items
    b = load_dataset("p5", folder, bid_seed=1).items
    c = load_dataset("p5", folder, bid_seed=2).items
    np.testing.assert_array_equal(a.bids, b.bids)
    assert not np.array_equal(a.bids, c.bids)
    assert "seed 1" in a.bid_source and "seed 2" in c.bid_source


def test_min_seq_len(tmp_path):
    folder = p5_folder(tmp_path / "p")
    with pytest.raises(DataFormatError, match="needs >= 4") as info:
        load_dataset("p5", folder, min_seq_len=4)
    assert info.value.line == 1


def test_missing_inputs_and_unknown_format(tmp_path):
    with pytest.raises(DataFormatError) as info:
        load_dataset("letter", tmp_path / "absent")
    assert info.value.path == str(tmp_path / "absent")
    folder = p5_folder(tmp_path / "p")
    (folder / "datamaps.json").unlink()
    with pytest.raises(DataFormatError, match="no such file") as info:
        load_dataset("p5", folder)
    assert info.value.path == str(folder / "datamaps.json")
    with pytest.raises(UnknownNameError, match="valid names: .*letter.*p5"):
        load_dataset("csv", folder)
