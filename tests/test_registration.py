"""sgrec_jax/registration.py: every name registered once with its options, and the defaults
that configs read without JAX equal to the ones the implementations declare themselves."""

import dataclasses
import inspect

import pytest

from sgrec_jax.core.registry import field_defaults
from sgrec_jax.data.load import DATASET_FORMATS
from sgrec_jax.data.synthetic import WorldConfig
from sgrec_jax.embeddings import EMBEDDING_SOURCES
from sgrec_jax.models.defaults import GENERATOR_OPTIONS, SASREC_OPTIONS
from sgrec_jax.models.options import ModelOptions
from sgrec_jax.models.registry import MODELS
from sgrec_jax.models.sasrec import SASRec
from sgrec_jax.rewards.channel import REWARD_CHANNELS
from sgrec_jax.rewards.ctr_model import CtrOptions
from sgrec_jax.rewards.defaults import CTR_OPTIONS
from sgrec_jax.rl.estimators import ESTIMATORS
from sgrec_jax.sid.defaults import QUANTIZER_OPTIONS
from sgrec_jax.sid.quantizers import QUANTIZERS
from sgrec_jax.stages.pipeline import STAGES

REGISTERED = {
    DATASET_FORMATS: ["letter", "p5", "synthetic"],
    EMBEDDING_SOURCES: ["collaborative", "npy", "sentence_encoder", "text"],
    QUANTIZERS: ["rq_kmeans", "rq_vae"],
    MODELS: ["decoder_only", "encoder_decoder"],
    REWARD_CHANNELS: ["ecpm", "ecpm_eval", "emb_cosine", "hit", "psj", "rank", "true_business",
                      "true_ctr", "true_relevance"],
    ESTIMATORS: ["a2po", "adv_sum", "gdpo", "mgda", "popo", "popo_light", "single",
                 "weighted_sum"],
    STAGES: ["item_transition", "popularity", "rl", "sasrec", "sft", "sids"],
}


@pytest.mark.parametrize("registry", REGISTERED, ids=lambda r: r.kind)
def test_everything_is_registered(registry):
    assert registry.names() == REGISTERED[registry]


def keyword_defaults(fn, skip=()) -> dict:
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and p.name not in skip}


def test_generator_options_are_model_options_fields():
    assert GENERATOR_OPTIONS == field_defaults(ModelOptions)
    ModelOptions(**GENERATOR_OPTIONS)


def test_sasrec_options_are_its_keyword_arguments():
    assert SASREC_OPTIONS == keyword_defaults(SASRec.__init__)


@pytest.mark.parametrize("name", sorted(QUANTIZER_OPTIONS))
def test_quantizer_options_are_its_fit_functions_keyword_arguments(name):
    assert QUANTIZER_OPTIONS[name] == keyword_defaults(QUANTIZERS.get(name))


def test_ctr_options_are_ctr_options_fields():
    assert CTR_OPTIONS == dataclasses.asdict(CtrOptions())


def test_synthetic_format_takes_the_world_fields_but_its_seed():
    assert DATASET_FORMATS.options("synthetic") == {
        k: v for k, v in field_defaults(WorldConfig).items() if k != "seed"}
    assert DATASET_FORMATS.options("p5") == DATASET_FORMATS.options("letter") == {}


def test_every_option_default_is_plain_data():
    """Defaults go into configs and config.json: numbers, strings, bools, None and tuples."""
    def plain(value) -> bool:
        if isinstance(value, tuple):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, float, str))

    for registry in REGISTERED:
        for name in registry.names():
            options = registry.options(name)
            assert all(plain(v) for v in options.values()), (registry.kind, name, options)
