"""The optional "sentence_encoder" source fails clearly when its package or model is missing."""

import importlib.util
import os

import numpy as np
import pytest

from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset
from sgrec_jax.embeddings import item_embeddings
from sgrec_jax.embeddings.sentence_encoder import SentenceEncoderUnavailableError


def make_dataset() -> SeqRecDataset:
    text = {f: ("",) * 3 for f in TEXT_FIELDS}
    text["title"] = ("red lipstick", "cordless drill", "coffee beans")
    items = Items(
        ids=("a", "b", "c"),
        text=text,
        attributes=((),) * 3,
        bids=np.ones(3, np.float32),
        bid_source="test",
    )
    return SeqRecDataset(
        name="tiny", items=items, user_ids=("u0",), sequences=(np.arange(3, dtype=np.int32),)
    )


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="sentence-transformers is installed here",
)
def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(SentenceEncoderUnavailableError, match="pip install sentence-transformers"):
        item_embeddings(
            "sentence_encoder", make_dataset(), dim=None, seed=0, model="all-MiniLM-L6-v2"
        )
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set before any loading is tried


def test_model_option_is_required():
    with pytest.raises(ValueError, match="'sentence_encoder' needs option\\(s\\) model"):
        item_embeddings("sentence_encoder", make_dataset(), dim=None, seed=0)
