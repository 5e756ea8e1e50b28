"""Registers everything a config can name, in one place: import it before looking names up.

Every entry point (experiments/*.py) imports this module first; library code only looks names
up. Each entry is registered with the defaults of its options, which live in modules without
JAX (`*/defaults.py`) so that experiment configs can list them; adding an implementation is its
module plus one line here (README, "How to add an estimator / a reward channel / a model").
"""

from sgrec_jax.data.formats.letter import load_letter
from sgrec_jax.data.formats.p5 import load_p5
from sgrec_jax.data.load import DATASET_FORMATS
from sgrec_jax.data.synthetic import load_synthetic, world_options
from sgrec_jax.embeddings.base import register_source
from sgrec_jax.embeddings.collaborative import CollaborativeOptions, collaborative_embeddings
from sgrec_jax.embeddings.precomputed import NpyOptions, npy_embeddings
from sgrec_jax.embeddings.sentence_encoder import (
    SentenceEncoderOptions,
    sentence_encoder_embeddings,
)
from sgrec_jax.embeddings.text import TextOptions, text_embeddings
from sgrec_jax.judge.defaults import PSJ_OPTIONS
from sgrec_jax.judge.psj_channel import build_psj
from sgrec_jax.models.defaults import BASELINE_OPTIONS, GENERATOR_OPTIONS, SASREC_OPTIONS
from sgrec_jax.models.generator import DecoderOnly, EncoderDecoder
from sgrec_jax.models.registry import MODELS
from sgrec_jax.rewards.business import build_ecpm, build_ecpm_eval
from sgrec_jax.rewards.channel import REWARD_CHANNELS
from sgrec_jax.rewards.defaults import CHANNEL_OPTIONS
from sgrec_jax.rewards.ranking import build_hit, build_rank
from sgrec_jax.rewards.semantic import build_emb_cosine
from sgrec_jax.rewards.truth import build_true_business, build_true_ctr, build_true_relevance
from sgrec_jax.rl.defaults import ESTIMATOR_OPTIONS
from sgrec_jax.rl.estimators import (
    ESTIMATORS,
    A2po,
    AdvSum,
    Gdpo,
    Mgda,
    Popo,
    PopoLight,
    Single,
    WeightedSum,
)
from sgrec_jax.sid.defaults import QUANTIZER_OPTIONS
from sgrec_jax.sid.quantizers import QUANTIZERS
from sgrec_jax.sid.rq_kmeans import rq_kmeans
from sgrec_jax.sid.rq_vae import rq_vae
from sgrec_jax.stages import baselines, rl, sasrec, sft, sids
from sgrec_jax.stages.pipeline import STAGES

# -- data ---------------------------------------------------------------------------------------

DATASET_FORMATS.register("p5")(load_p5)
DATASET_FORMATS.register("letter")(load_letter)
DATASET_FORMATS.register("synthetic", defaults=world_options())(load_synthetic)

# -- semantic IDs: item embeddings, then a quantizer --------------------------------------------

register_source("text", TextOptions)(text_embeddings)
register_source("collaborative", CollaborativeOptions)(collaborative_embeddings)
register_source("npy", NpyOptions, needs_dim=False)(npy_embeddings)
register_source("sentence_encoder", SentenceEncoderOptions, needs_dim=False)(
    sentence_encoder_embeddings
)

QUANTIZERS.register("rq_kmeans", defaults=QUANTIZER_OPTIONS["rq_kmeans"])(rq_kmeans)
QUANTIZERS.register("rq_vae", defaults=QUANTIZER_OPTIONS["rq_vae"])(rq_vae)

# -- models -------------------------------------------------------------------------------------

MODELS.register("encoder_decoder", defaults=GENERATOR_OPTIONS)(EncoderDecoder)
MODELS.register("decoder_only", defaults=GENERATOR_OPTIONS)(DecoderOnly)

# -- reward channels ----------------------------------------------------------------------------

REWARD_CHANNELS.register("hit", defaults=CHANNEL_OPTIONS["hit"])(build_hit)
REWARD_CHANNELS.register("rank", defaults=CHANNEL_OPTIONS["rank"])(build_rank)
REWARD_CHANNELS.register("ecpm", defaults=CHANNEL_OPTIONS["ecpm"])(build_ecpm)
REWARD_CHANNELS.register("ecpm_eval", defaults=CHANNEL_OPTIONS["ecpm_eval"])(build_ecpm_eval)
REWARD_CHANNELS.register("emb_cosine", defaults=CHANNEL_OPTIONS["emb_cosine"])(build_emb_cosine)
REWARD_CHANNELS.register("true_ctr", defaults=CHANNEL_OPTIONS["true_ctr"])(build_true_ctr)
REWARD_CHANNELS.register("true_business", defaults=CHANNEL_OPTIONS["true_business"])(
    build_true_business
)
REWARD_CHANNELS.register("true_relevance", defaults=CHANNEL_OPTIONS["true_relevance"])(
    build_true_relevance
)
REWARD_CHANNELS.register("psj", defaults=PSJ_OPTIONS)(build_psj)

# -- advantage estimators -----------------------------------------------------------------------

ESTIMATORS.register("single", defaults=ESTIMATOR_OPTIONS["single"])(Single)
ESTIMATORS.register("weighted_sum", defaults=ESTIMATOR_OPTIONS["weighted_sum"])(WeightedSum)
ESTIMATORS.register("adv_sum", defaults=ESTIMATOR_OPTIONS["adv_sum"])(AdvSum)
ESTIMATORS.register("gdpo", defaults=ESTIMATOR_OPTIONS["gdpo"])(Gdpo)
ESTIMATORS.register("a2po", defaults=ESTIMATOR_OPTIONS["a2po"])(A2po)
ESTIMATORS.register("popo_light", defaults=ESTIMATOR_OPTIONS["popo_light"])(PopoLight)
ESTIMATORS.register("popo", defaults=ESTIMATOR_OPTIONS["popo"])(Popo)
ESTIMATORS.register("mgda", defaults=ESTIMATOR_OPTIONS["mgda"])(Mgda)

# -- pipeline stages (a stage's options, if any, are the config section it reads) ---------------

STAGES.register("sids")(sids.STAGE)
STAGES.register("popularity", defaults=BASELINE_OPTIONS["popularity"])(baselines.POPULARITY)
STAGES.register("item_transition", defaults=BASELINE_OPTIONS["item_transition"])(
    baselines.ITEM_TRANSITION
)
STAGES.register("sft")(sft.STAGE)
STAGES.register("sasrec", defaults=SASREC_OPTIONS)(sasrec.STAGE)
STAGES.register("rl")(rl.STAGE)
