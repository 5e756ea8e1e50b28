"""Defaults shared by every experiment config; each config file overrides what it needs.

Every field can be overridden on the command line, e.g. `--config.sid.levels=4`. Configs are
locked, so a typo in a field name fails before any work with the list of valid fields. Option
sections list every option of every registered name with its default, read from the packages'
`defaults.py` modules, which import no JAX (sgrec_jax/registration.py registers the same).
"""

import os
from collections.abc import Mapping
from typing import Any

from ml_collections import ConfigDict, config_dict

from sgrec_jax.core.registry import field_defaults
from sgrec_jax.embeddings.packaged_models import PACKAGED_MODELS
from sgrec_jax.embeddings.sentence_encoder import DEFAULT_MODEL, SentenceEncoderOptions
from sgrec_jax.embeddings.text import TextOptions
from sgrec_jax.judge.defaults import JUDGE_OPTIONS, PSJ_OPTIONS
from sgrec_jax.models.defaults import BASELINE_OPTIONS, GENERATOR_OPTIONS, SASREC_OPTIONS
from sgrec_jax.rewards.defaults import CHANNEL_OPTIONS
from sgrec_jax.rl.defaults import ESTIMATOR_OPTIONS
from sgrec_jax.sid.defaults import QUANTIZER_OPTIONS


def options_config(defaults: Mapping[str, Any]) -> ConfigDict:
    """A config section holding `defaults` (nested mappings become sections).

    A None default becomes a placeholder that reads None until set: ml_collections cannot
    override a plain None field from the command line (it has no type to parse the text as);
    an `object` placeholder takes a Python literal (`64`, `(1, 2)`, `{'ecpm': 0.5}`) or else
    the text (`ecpm`).
    """
    return ConfigDict({
        name: options_config(value) if isinstance(value, Mapping)
        else config_dict.placeholder(object) if value is None
        else value
        for name, value in defaults.items()
    })


def data_root() -> str:
    """Where public datasets live: $SGREC_DATA_DIR, else ./data (see README, "Data")."""
    return os.environ.get("SGREC_DATA_DIR", "data")


def base_config() -> ConfigDict:
    config = ConfigDict()
    config.seed = 0
    # Pipeline stages, in order (registered in sgrec_jax/registration.py).
    config.stages = ("sids",)

    config.data = ConfigDict()
    config.data.format = "synthetic"  # A DATASET_FORMATS name: p5, letter, synthetic.
    config.data.dir = ""
    config.data.name = ""  # Defaults to the folder name.
    config.data.bid_seed = 0  # Seeds the simulated bids (and the synthetic world).
    config.data.min_seq_len = 3
    config.data.max_history = 20  # TIGER's cap.
    config.data.options = ConfigDict()  # Format-specific, e.g. the synthetic world's knobs.
    # Where training examples are read from: "memory" (the leave-one-out split in host memory)
    # or "array_record" (shards in data.shards_dir, written by `python -m
    # experiments.write_shards`, streamed by Grain; sgrec_jax/data/sources.py; the stages then
    # read the shard directory alone, never the sequences: sgrec_jax/data/shard_dataset.py).
    config.data.source = "memory"
    config.data.shards_dir = ""
    # Training examples the generator's SFT never sees, kept as the RL requests: "none",
    # "last_transition" or "users:<fraction>" (sgrec_jax/data/holdout.py).
    config.data.rl_holdout = "none"

    config.sid = ConfigDict()
    config.sid.source = "quantizer"  # "quantizer" or "index" (a precomputed LETTER index).
    config.sid.index_path = ""  # Relative paths are inside data.dir.
    config.sid.codebook_size = 256
    config.sid.levels = 3
    config.sid.quantizer = "rq_kmeans"  # A QUANTIZERS name: rq_kmeans, rq_vae.
    config.sid.quantizer_options = options_config(QUANTIZER_OPTIONS["rq_kmeans"])
    config.sid.embeddings = ConfigDict()
    config.sid.embeddings.source = "text"  # An EMBEDDING_SOURCES name.
    config.sid.embeddings.dim = 64
    config.sid.embeddings.options = options_config(field_defaults(TextOptions))

    # Device mesh: data-parallel x FSDP; -1 = all remaining devices.
    config.mesh = ConfigDict({"data": -1, "fsdp": 1})

    # Multi-process runs (sgrec_jax/core/distributed.py): enabled joins jax.distributed; unset
    # fields ("", 0, -1) are detected by JAX (TPU pods, SLURM, Open MPI) or read from the
    # environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
    config.distributed = ConfigDict({
        "enabled": False,
        "coordinator_address": "",  # "host:port" of process 0.
        "num_processes": 0,
        "process_id": -1,
        "initialization_timeout": 300,  # Seconds to wait for every process to join.
    })

    config.model = ConfigDict()
    config.model.name = "encoder_decoder"  # A MODELS name: encoder_decoder, decoder_only.
    config.model.options = options_config(GENERATOR_OPTIONS)

    # Supervised next-item training of the generator (the "sft" stage).
    config.sft = supervised_training()
    # Share of each batch trained on a random recent suffix of its history (0 = off);
    # sgrec_jax/train/augment.py says why.
    config.sft.history_crop = 0.0
    # Longest suffix a crop keeps (0 = any length; 1 = the last item alone).
    config.sft.history_crop_max_keep = 0
    # A copy-head model: weight of an extra NLL under the generator part's own logits, so it
    # learns the targets the pointer copies too (sgrec_jax/stages/sft.make_sft_loss); 0 = off.
    config.sft.generator_nll_weight = 0.0

    # The SASRec baseline (the "sasrec" stage), RecBole's Beauty settings.
    config.sasrec = ConfigDict()
    config.sasrec.model = options_config(SASREC_OPTIONS)
    config.sasrec.train = supervised_training()

    # The counting floors (the "popularity" and "item_transition" stages), options by stage.
    config.baselines = options_config(BASELINE_OPTIONS)

    # RL alignment of the generator (the "rl" stage).
    config.rl = rl_options()

    # PSJ stage 1, aspect evidence of sampled pairs (`python -m experiments.judge`; the pipeline
    # does not read it).
    config.judge = options_config(JUDGE_OPTIONS)

    config.eval = ConfigDict()
    config.eval.beam_size = 20  # Full ranking by constrained beam search; >= 10.
    config.eval.batch_size = 256
    config.eval.valid_users = 2000  # Validation subset used for early stopping; 0 = all.
    # Test users ranked: 0 = every one (the protocol); N > 0 = a seeded subset of N, for
    # measurements at scale (experiments/data_scale.py), never for reported protocol numbers.
    config.eval.test_users = 0
    # How beam search scores a level: "renormalized" over the allowed codes, or "full_softmax"
    # over the whole codebook with disallowed codes masked (HF prefix-constrained decoding).
    config.eval.level_scoring = "renormalized"
    return config


def supervised_training() -> ConfigDict:
    """The fields of supervised training (sgrec_jax/train/supervised.py and train/loop.py)."""
    return ConfigDict({
        "batch_size": 256,
        "num_steps": 20_000,
        "learning_rate": 1e-3,
        "warmup_steps": 500,
        "weight_decay": 0.01,
        "clip_norm": 1.0,
        "eval_every": 1000,
        "patience": 5,  # Evaluations without improvement before stopping; 0 = never.
        "best_metric": "ndcg@10",
        "log_every": 50,
        "keep_checkpoints": 2,
        "max_steps_per_run": 0,  # > 0: save and stop after this many steps; rerun to resume.
        # History widths that group examples of similar length into one batch, e.g. (5, 10):
        # padding slots stop costing encoder time (sgrec_jax/data/pipeline.py); () = off.
        "length_buckets": (),
    })


def rl_options() -> ConfigDict:
    """The fields of the "rl" stage (sgrec_jax/stages/rl.py), with the options of every
    reward channel and advantage estimator exposed under their names."""
    return ConfigDict({
        "channels": ("ecpm", "emb_cosine"),  # REWARD_CHANNELS names, the K of R[B, G, K].
        # {channel: {option: value}}
        "channel_options": options_config(dict(sorted({**CHANNEL_OPTIONS,
                                                       "psj": PSJ_OPTIONS}.items()))),
        "estimator": "a2po",  # An ESTIMATORS name (algorithms.md section 4).
        # {estimator: {option: value}}
        "estimator_options": options_config(dict(sorted(ESTIMATOR_OPTIONS.items()))),
        "gradient_params": "",  # popo/mgda: regex over parameter paths for g_k; "" = all.
        "group_size": 16,  # G candidates per request.
        "rollout": "beam",  # "beam" (G distinct items) or "sample".
        # Put each request's logged target into its group where the rollout missed it (in place
        # of the last candidate): every group of a "rank"/"hit" reward then has a positive.
        # Off: on Scientific's held-out users it cost 8% of R@10 (docs/results.md).
        "target_in_group": False,
        "temperature": 1.0,  # Sampling rollouts only.
        "batch_size": 64,  # Requests per rollout batch.
        "updates_per_batch": 1,
        "num_steps": 300,  # Rollout batches; 0 evaluates the start policy (the SFT row).
        "learning_rate": 1e-4,
        "warmup_steps": 20,
        "weight_decay": 0.0,
        "clip_norm": 1.0,
        "clip_eps": 0.2,
        "beta": 1e-3,  # Weight of the KL penalty to the SFT reference.
        # The KL penalised: "k3" on the candidates' tokens (logged as k3_beams), or "exact", the
        # KL of the constrained per-level distributions at the prefixes the candidates visit
        # (logged as kl_exact either way); both per (candidate, level).
        "kl_estimator": "k3",
        # Direction of the "exact" KL: "reverse" KL(pi || pi_ref), or "forward" KL(pi_ref || pi),
        # which also charges the policy for mass the reference put on codes no candidate visits
        # (logged as kl_exact_forward).
        "kl_direction": "reverse",
        "pg_weight": 1.0,  # Weight of the clipped policy-gradient objective.
        # Weight of the SFT loss of each request's logged target (the NLL anchor). pg_weight 0,
        # nll_weight 1, beta 0: SFT continued on the RL requests, the control row of an RL run.
        "nll_weight": 0.0,
        # 0: the NLL anchor is a term of the one loss the optimizer sees. > 0: the anchor gets its
        # own AdamW at this learning rate (same warmup, decay and clipping) and the RL terms keep
        # learning_rate, so each moves the policy as it would alone; in one summed loss the
        # larger gradient sets Adam's scale (sgrec_jax/train/per_term_optimizer.py).
        "nll_learning_rate": 0.0,
        # How a candidate's advantage reaches its SID levels: "item" (every level gets it) or
        # "prefix_tree" (each level gets the change in the group's mean advantage its code
        # caused; sgrec_jax/rl/level_credit.py).
        "level_credit": "item",
        # How much each candidate counts in the update: "uniform" (GRPO: 1/G each) or "policy"
        # (its share of the group's probability under the rollout policy, the advantage
        # recentred on the weighted mean: the exact gradient of the expected advantage over the
        # group; sgrec_jax/rl/candidate_weighting.py).
        "candidate_weighting": "uniform",
        # Which RL requests train: "all", or "valid_follows": those whose target follows their
        # last item subsampled to that share among the validation targets (RL requests are
        # training transitions, which repeat more often; sgrec_jax/rl/request_mix.py).
        "request_mix": "all",
        "semantic_sample_ratio": 1.0,  # Fraction of requests semantic channels judge.
        "semantic_eval_channel": "emb_cosine",  # Scores rl/semantic@10.
        "init_workdir": "",  # An SFT work directory to start from when "sft" is not a stage.
        # Reward models (pCTR, PSJ aggregator) are cached here; "" = init_workdir, else DIR.
        "rewards_workdir": "",
        "reward_seed": 0,  # Seeds the reward models: fixed across the seeds of an ablation.
        "log_every": 10,
        "eval_every": 100,  # Validation and checkpoint cadence.
        "keep_checkpoints": 2,
        "max_steps_per_run": 0,  # > 0: save and stop after this many steps; rerun to resume.
        # A validation metric (e.g. "ndcg@10", "ecpm@10"; larger is better) whose best state,
        # the start policy included, is kept and tested; "" = the final policy.
        "best_metric": "",
        "patience": 0,  # Validations without best_metric improvement before stopping; 0 = never.
    })


def set_quantizer(config: ConfigDict, name: str) -> None:
    """Selects a quantizer and exposes all its options (with defaults) for overriding."""
    config.sid.quantizer = name
    config.sid.quantizer_options = options_config(QUANTIZER_OPTIONS[name])


# Item-text embedding sources a config may select with their options dataclasses (the
# sentence_encoder module imports torch only when it encodes, so configs stay light).
TEXT_EMBEDDING_OPTIONS = {"text": TextOptions, "sentence_encoder": SentenceEncoderOptions}


def set_embeddings(config: ConfigDict, source: str, dim: int) -> None:
    """Selects an item-text embedding source for the SIDs and exposes all its options (with
    defaults) for overriding, as set_quantizer does for quantizers. The sections differ per
    source, so switching sources takes this (or a config arg that calls it); overriding
    sid.embeddings.source alone leaves the previous source's options, which fail by name."""
    config.sid.embeddings.source = source
    config.sid.embeddings.dim = dim
    config.sid.embeddings.options = options_config(field_defaults(TEXT_EMBEDDING_OPTIONS[source]))


# real_data_sids args that quantize MiniLM sentence embeddings instead of TF-IDF ones.
MINILM_ARGS = {"rq_kmeans_minilm": "rq_kmeans"}


def real_data_sids(config: ConfigDict, arg: str, index_arg: str, index_file: str) -> None:
    """SIDs of a public dataset from its text: arg `index_arg` reads the precomputed index
    `index_file` of the data folder; "rq_kmeans_minilm" is "rq_kmeans" on the 384-d
    all-MiniLM-L6-v2 sentence embeddings (the "sentence_encoder" source's packaged model, kept
    at its full width); otherwise arg names the quantizer (3 x 256 codes, 128-d text
    embeddings; RQ-KMeans capacity-balanced, which cut collisions before dedup from 34% to 24%
    on Scientific)."""
    config.sid.levels = 3
    config.sid.codebook_size = 256
    if arg in MINILM_ARGS:
        set_embeddings(config, "sentence_encoder", PACKAGED_MODELS[DEFAULT_MODEL].width)
        arg = MINILM_ARGS[arg]
    else:
        set_embeddings(config, "text", 128)
    if arg == index_arg:
        config.sid.source = "index"
        config.sid.index_path = index_file
        return
    set_quantizer(config, arg)
    if arg == "rq_kmeans":
        config.sid.quantizer_options.balanced = True


def tiger_sft(config: ConfigDict, *, num_steps: int, warmup_steps: int, eval_every: int,
              patience: int) -> None:
    """The real-data SFT recipe: a TIGER-sized encoder-decoder (4+4 layers, d 128) with one
    history token per item and a transition memory with a copy head (the 10 most frequent
    training successors of each of the last 3 history items, and a pointer over them mixed into
    each level), batch 256 bucketed by history length, peak lr 2e-3, half of each batch trained
    on a random recent suffix of its history, validated by beam 20 on 2,000 users; the
    popularity and item-transition floors run beside it."""
    config.stages = ("sids", "popularity", "item_transition", "sft")
    config.model.name = "encoder_decoder"
    config.model.options.update(
        num_layers=4, d_model=128, num_heads=4, d_ff=512, dropout=0.1, history_encoding="item"
    )
    # Memory + copy head over the last 3 items, text RQ-KMeans SIDs, one seed each: Beauty R@10
    # 0.0567 -> 0.0773, N@10 0.0295 -> 0.0453; Scientific R@10 0.0943 -> 0.1012 (docs/results.md,
    # "The generator reads the training transitions"). Costs ~1.7x per SFT step.
    config.model.options.update(transition_memory=10, transition_memory_copy=True,
                                transition_memory_window=3)
    # Length buckets: 1.77x the examples/s on Scientific at equal test metrics; history crop:
    # N@10 +0.0027 [+0.0003, +0.0050] on Scientific (docs/results.md, "Generator recipe").
    config.sft.update(batch_size=256, num_steps=num_steps, learning_rate=2e-3,
                      warmup_steps=warmup_steps, eval_every=eval_every, patience=patience,
                      length_buckets=(3, 8), history_crop=0.5)
    config.eval.update(beam_size=20, valid_users=2000)
