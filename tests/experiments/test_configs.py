"""Every experiment config loads with each arg it documents and passes the pipeline's checks;
configs list every registered option, import no JAX, and take every option on the command line."""

import importlib
import math
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers what the configs name)
from experiments.configs import common
from sgrec_jax.data.holdout import rl_requests
from sgrec_jax.data.split import leave_one_out
from sgrec_jax.embeddings import EMBEDDING_SOURCES
from sgrec_jax.models.registry import MODELS
from sgrec_jax.rewards.channel import REWARD_CHANNELS
from sgrec_jax.rl.estimators import ESTIMATORS
from sgrec_jax.sid.quantizers import QUANTIZERS
from sgrec_jax.stages.pipeline import STAGES, check_config, load_configured_dataset

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "configs"
# benchmark, device_check: sizes of the speed benchmark and of the device check, not experiments
# (tests/benchmarks/test_run.py, tests/benchmarks/test_device_check.py).
NOT_CONFIGS = {"__init__", "common", "benchmark", "device_check"}
RANK_ARGS = ("rank_single", "rank_a2po", "rank_adv_sum", "rank_popo")
# The args each config's docstring documents; "" is get_config()'s default.
DOCUMENTED_ARGS = {
    "quickstart": ("", "rq_kmeans", "rq_vae"),
    "beauty_sids": ("", "rq_kmeans", "rq_vae", "letter_index", "rq_kmeans_minilm"),
    "scientific_sids": ("", "rq_kmeans", "rq_vae", "zcr_index", "rq_kmeans_minilm"),
    "beauty_sft": ("", "letter_index", "rq_kmeans", "rq_vae", "rq_kmeans_minilm"),
    "scientific_sft": ("", "zcr_index", "rq_kmeans", "rq_vae", "rq_kmeans_minilm"),
    "beauty_sasrec": ("",),
    "scientific_sasrec": ("",),
    # RL configs: the arg names the advantage estimator; "rank_<estimator>" on the public data
    # rewards MiniOneRec's "rank" (with "psj" but for "single").
    "quickstart_rl": ("", "a2po", "popo", "adv_sum"),
    "scientific_rl": ("", "a2po", "popo", *RANK_ARGS),
    "beauty_rl": ("", "a2po", "popo", *RANK_ARGS),
    # The synthetic conflict study: the arg is the world's conflict level.
    "synthetic_conflict": ("", "0", "0.5", "1"),
}
SYNTHETIC = ("quickstart", "quickstart_rl", "synthetic_conflict")
CASES = [(name, arg) for name, args in DOCUMENTED_ARGS.items() for arg in args]


def load(name: str, arg: str):
    module = importlib.import_module(f"experiments.configs.{name}")
    return module.get_config(arg) if arg else module.get_config()


def test_every_config_file_is_covered():
    files = {path.stem for path in CONFIGS.glob("*.py")} - NOT_CONFIGS
    assert files == set(DOCUMENTED_ARGS), "list the args of new configs in DOCUMENTED_ARGS"


@pytest.mark.parametrize("name, arg", CASES)
def test_config_loads_and_passes_the_checks(name, arg):
    config = load(name, arg)
    check_config(config)
    assert config.stages, name
    if "sft" in config.stages:
        assert config.eval.beam_size >= 10
    if name.endswith("_rl"):
        assert config.rl.estimator == (arg or "a2po").removeprefix("rank_")
    elif name == "synthetic_conflict":
        assert config.data.options.conflict == float(arg or "0.5")
    elif arg.endswith("_index"):
        assert config.sid.source == "index" and config.sid.index_path
    elif arg:
        assert config.sid.source == "quantizer"
        assert config.sid.quantizer == common.MINILM_ARGS.get(arg, arg)


def test_conflict_study_rewards_the_ground_truth_at_its_conflict_level():
    config = load("synthetic_conflict", "1")
    assert config.data.options.conflict == 1.0
    assert load("synthetic_conflict", "").data.options.conflict == 0.5
    assert tuple(config.rl.channels) == ("true_business", "true_relevance")
    assert config.rl.estimator_options.a2po.business == "true_business"
    with pytest.raises(ValueError, match="conflict must be in"):
        load("synthetic_conflict", "1.5")
    with pytest.raises(ValueError, match="a number in"):
        load("synthetic_conflict", "high")


@pytest.mark.parametrize("name, requests, steps", [("scientific_rl", 3_265, 105),
                                                   ("beauty_rl", 13_232, 414)])
def test_rl_configs_train_sft_then_rl_on_held_out_users_for_two_epochs(name, requests, steps):
    single = load(name, "rank_single").rl
    assert tuple(single.channels) == ("rank",) and single.estimator_options.single.channel == "rank"
    a2po = load(name, "rank_a2po").rl
    assert tuple(a2po.channels) == ("rank", "psj")
    assert (a2po.estimator_options.a2po.business, a2po.estimator_options.a2po.semantic) == (
        "rank", "psj")
    ads = load(name, "").rl  # the advertising setting: eCPM and the PSJ, same protocol
    assert tuple(ads.channels) == ("ecpm", "psj") and ads.estimator == "a2po"
    assert ads.estimator_options.a2po.business == "ecpm"
    for arg in ("", "rank_single", "rank_a2po", "rank_popo"):
        config = load(name, arg)
        assert tuple(config.stages) == ("sids", "sft", "rl") and config.rl.init_workdir == ""
        assert config.data.rl_holdout == "users:0.1"
        rl = config.rl
        assert rl.num_steps == steps and rl.batch_size == 64 and rl.eval_every * 3 == steps
        # Two epochs of requests, rounded up to 3 validation intervals.
        assert 2.0 <= rl.num_steps * rl.batch_size / requests < 2.0 + 3 * 64 / requests


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["scientific_rl", "beauty_rl"])
def test_rl_budgets_count_the_real_training_examples(name, beauty_dir, scientific_dir):
    config = load(name, "rank_a2po")
    train = leave_one_out(load_configured_dataset(config), config.data.max_history).train
    module = importlib.import_module(f"experiments.configs.{name}")
    assert len(train) == module.TRAIN_EXAMPLES
    assert len(rl_requests(train, config.data.rl_holdout)) == module.HOLDOUT_REQUESTS


@pytest.mark.parametrize("name", ["scientific_sids", "beauty_sids", "scientific_sft", "beauty_sft"])
def test_minilm_arg_is_rq_kmeans_on_minilm_sentence_embeddings(name):
    """rq_kmeans_minilm changes only the embeddings of the rq_kmeans arg: the packaged MiniLM at
    its full 384-d width, with every option of the sentence_encoder source listed."""
    minilm, tfidf = load(name, "rq_kmeans_minilm"), load(name, "rq_kmeans")
    emb = minilm.sid.embeddings
    assert (emb.source, emb.dim, emb.options.model) == ("sentence_encoder", 384,
                                                          "all-MiniLM-L6-v2")
    assert emb.options.to_dict() == EMBEDDING_SOURCES.options("sentence_encoder")
    assert minilm.sid.quantizer == "rq_kmeans" and minilm.sid.quantizer_options.balanced
    assert (tfidf.sid.embeddings.source, tfidf.sid.embeddings.dim) == ("text", 128)
    for config in (minilm, tfidf):
        del config.sid.embeddings
    assert minilm.to_dict() == tfidf.to_dict()


def test_sid_configs_default_to_their_documented_sids():
    for name in ("beauty_sft", "scientific_sft", "beauty_sids", "scientific_sids"):
        sid = load(name, "").sid
        assert (sid.source, sid.quantizer, sid.quantizer_options.balanced) == (
            "quantizer", "rq_kmeans", True), name
    assert load("beauty_sft", "letter_index").sid.index_path.endswith("letter_sid_index.json")
    assert load("scientific_sft", "zcr_index").sid.index_path.endswith("rqvae_zcr_sid_index.json")


@pytest.mark.parametrize("name", ["beauty_sft", "scientific_sft", "beauty_rl", "scientific_rl"])
def test_the_generator_recipe_reads_the_training_transitions(name):
    """The default generator (and so the RL configs' start policy) is the copy model over the
    last 3 items' training successors: the recipe of docs/results.md."""
    options = load(name, "").model.options
    assert (options.transition_memory, options.transition_memory_copy,
            options.transition_memory_window) == (10, True, 3)


@pytest.mark.real_data
@pytest.mark.parametrize("name, arg", [c for c in CASES if c[0] not in SYNTHETIC])
def test_real_data_paths_exist(name, arg, beauty_dir, scientific_dir):
    config = load(name, arg)
    assert os.path.isdir(config.data.dir), config.data.dir
    if config.sid.source == "index" and set(config.stages) & {"sids", "sft"}:
        path = os.path.join(config.data.dir, config.sid.index_path)  # relative to data.dir
        assert os.path.isfile(path), path


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["beauty_sasrec", "scientific_sasrec"])
def test_sasrec_validates_once_per_epoch_for_up_to_200_epochs(name, beauty_dir, scientific_dir):
    config = load(name, "")
    train = config.sasrec.train
    examples = len(leave_one_out(load_configured_dataset(config), config.data.max_history).train)
    assert train.eval_every == math.floor(examples / train.batch_size)
    assert 100 <= train.num_steps / train.eval_every <= 200
    assert (train.patience, train.batch_size, train.learning_rate) == (10, 256, 1e-3)
    assert config.eval.valid_users == 0


def test_configs_list_every_option_without_importing_jax():
    """Configs read option defaults from the packages' defaults.py modules, never the models."""
    code = ("import sys, importlib\n"
            f"for name in {sorted(DOCUMENTED_ARGS)!r}:\n"
            "    importlib.import_module(f'experiments.configs.{name}').get_config()\n"
            "heavy = {'jax', 'flax', 'optax', 'orbax', 'sgrec_jax.judge.psj_channel'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    root = CONFIGS.parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


def test_config_sections_hold_the_registered_options():
    """What the base config lists under each option section is what the registries check."""
    config = common.base_config()
    assert config.rl.channel_options.to_dict() == {
        name: REWARD_CHANNELS.options(name) for name in REWARD_CHANNELS.names()}
    assert config.rl.estimator_options.to_dict() == {
        name: ESTIMATORS.options(name) for name in ESTIMATORS.names()}
    assert config.model.options.to_dict() == MODELS.options(config.model.name)
    assert config.sasrec.model.to_dict() == STAGES.options("sasrec")
    assert config.baselines.to_dict() == {
        name: STAGES.options(name) for name in ("popularity", "item_transition")}
    assert config.sid.embeddings.options.to_dict() == EMBEDDING_SOURCES.options("text")
    for source in common.TEXT_EMBEDDING_OPTIONS:
        common.set_embeddings(config, source, 32)
        assert config.sid.embeddings.options.to_dict() == EMBEDDING_SOURCES.options(source)
    for quantizer in QUANTIZERS.names():
        common.set_quantizer(config, quantizer)
        assert config.sid.quantizer_options.to_dict() == QUANTIZERS.options(quantizer)


def test_an_option_whose_default_is_none_is_settable_on_the_command_line():
    """A None default is a placeholder: --config.* sets it (a plain None field refuses)."""
    argv = ["prog", f"--config={CONFIGS / 'quickstart_rl.py'}:single",
            "--config.rl.estimator_options.single.channel=emb_cosine",
            "--config.rl.channel_options.emb_cosine.dim=32",
            "--config.rl.estimator_options.adv_sum.weights={'ecpm': 0.25}"]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True,
                                    sys_argv=argv)  # the overrides it defines as flags
    flag_values(argv)
    config = flag_values.config
    assert config.rl.estimator_options.single.channel == "emb_cosine"
    assert config.rl.channel_options.emb_cosine.dim == 32
    assert dict(config.rl.estimator_options.adv_sum.weights) == {"ecpm": 0.25}
    assert config.rl.estimator_options.a2po.semantic is None  # the others stay None
    check_config(config)
    assert config.to_dict()["rl"]["channel_options"]["psj"]["dim"] is None
