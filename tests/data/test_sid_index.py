import json

import numpy as np
import pytest

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.sid_index import load_sid_index
from tests.conftest import data_dir

INDEX = {
    "1": ["<a_3>", "<b_0>", "<c_7>"],
    "0": ["<a_1>", "<b_2>", "<c_0>"],
    "2": ["<a_3>", "<b_0>", "<c_7>"],  # collides with item 1; kept as is
}


def write(tmp_path, index):
    path = tmp_path / "index.json"
    path.write_text(index if isinstance(index, str) else json.dumps(index))
    return path


def test_codes_are_aligned_to_item_keys(tmp_path):
    codes, sizes = load_sid_index(write(tmp_path, INDEX), num_items=3)
    assert codes.dtype == np.int32
    np.testing.assert_array_equal(codes, [[1, 2, 0], [3, 0, 7], [3, 0, 7]])
    assert sizes == (4, 3, 8)  # largest code + 1 when sizes are not given


def test_given_codebook_sizes(tmp_path):
    path = write(tmp_path, INDEX)
    assert load_sid_index(path, 3, codebook_sizes=8).codebook_sizes == (8, 8, 8)
    assert load_sid_index(path, 3, codebook_sizes=(4, 3, 8)).codebook_sizes == (4, 3, 8)
    with pytest.raises(DataFormatError, match="item '1': code 7 at level 2 .* size 7"):
        load_sid_index(path, 3, codebook_sizes=7)
    with pytest.raises(ValueError, match="2 codebook sizes for 3 levels"):
        load_sid_index(path, 3, codebook_sizes=(8, 8))


BAD = {
    "missing_item": (INDEX, 4, "1 items have no SID, first missing key '3'"),
    "extra_key": (INDEX, 2, "extra key '2'"),
    "non_integer_key": ({**INDEX, "x": ["<a_1>"]}, 3, "item key 'x' is not an integer"),
    "level_order": ({"0": ["<a_1>", "<c_2>"]}, 1, "item '0': token '<c_2>' at level 1"),
    "bad_token": ({"0": ["<a_1>", "b_2"]}, 1, "item '0': token 'b_2' is not <x_k>"),
    "negative_code": ({"0": ["<a_-1>"]}, 1, "is not <x_k>"),
    "ragged": ({"0": ["<a_1>", "<b_1>"], "1": ["<a_1>"]}, 2, "item '1': 1 levels"),
    "empty_tuple": ({"0": []}, 1, "item '0': expected a non-empty list"),
    "duplicated_key": ('{"0": ["<a_1>"],\n "0": ["<a_2>"]}', 1, "duplicated key '0'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_index_names_file_and_key(tmp_path, case):
    index, num_items, words = BAD[case]
    path = write(tmp_path, index)
    with pytest.raises(DataFormatError) as info:
        load_sid_index(path, num_items)
    assert info.value.path == str(path)
    assert words in str(info.value)


@pytest.mark.real_data
def test_real_indexes():
    beauty = load_sid_index(data_dir("amazon2014_beauty") / "letter_sid_index.json", 12101, 256)
    assert beauty.codes.shape == (12101, 4) and beauty.codebook_sizes == (256,) * 4
    assert beauty.codes[0].tolist() == [183, 70, 232, 6]
    assert len({tuple(r) for r in beauty.codes.tolist()}) == 12088  # 13 colliding items
    sci = load_sid_index(data_dir("amazon2018_scientific") / "rqvae_zcr_sid_index.json", 4344, 256)
    assert len({tuple(r) for r in sci.codes.tolist()}) == 4344
