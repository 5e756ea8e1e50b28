"""The item table of a shard directory gives back the very Items it was written from."""

import numpy as np
import pytest

from sgrec_jax.data.dataset import Items
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.item_table import decode_items, encode_items


def items():
    return Items(ids=("a", "b", "c"),
                 text={"title": ("Crème brûlée kit", "", "日本語 title"),
                       "brand": ("x", "y" * 300, "")},
                 attributes=((1, 2), (), (7,)), bids=np.array([1.0, 0.5, 2.0], np.float32),
                 bid_source="simulated")


def test_round_trip_keeps_text_attributes_and_bids():
    table = encode_items(items())
    assert table["text_brand"].dtype == np.uint8  # ragged bytes, not fixed-width strings
    back = decode_items(table, "simulated", "items.npz")
    assert back.ids == items().ids and dict(back.text) == dict(items().text)
    assert back.attributes == items().attributes and back.bid_source == "simulated"
    np.testing.assert_array_equal(back.bids, items().bids)
    assert back.document(0) == items().document(0)


@pytest.mark.parametrize("broken, message", [
    (lambda t: t.pop("attributes_ends"), r"item table lacks \['attributes_ends'\]"),
    (lambda t: t.update(text_title_ends=t["text_title_ends"][:2]),
     "text_title_ends does not index text_title for 3 items"),
    (lambda t: t.update(bids=t["bids"][:2]), r"items.bids has shape \(2,\)"),
])
def test_a_broken_table_names_the_file(broken, message):
    table = encode_items(items())
    broken(table)
    with pytest.raises(DataFormatError, match=message) as error:
        decode_items(table, "simulated", "/shards/items.npz")
    assert str(error.value).startswith("/shards/items.npz:")
