"""check_same_config: which differences a finished run may have from the config asked for."""

import json

import pytest
from ml_collections import ConfigDict

from sgrec_jax.stages.pipeline import CONFIG_FILE
from sgrec_jax.stages.runs import check_same_config


def config(**model) -> ConfigDict:
    return ConfigDict({"seed": 0, "model": {"d_model": 8, **model},
                       "sft": {"num_steps": 10, "max_steps_per_run": 0}})


def finished_with(tmp_path, cfg: ConfigDict):
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg.to_dict()))
    return str(tmp_path)


def test_same_config_and_run_control_fields_pass(tmp_path):
    directory = finished_with(tmp_path, config())
    check_same_config(directory, config())
    changed = config()
    changed.sft.max_steps_per_run = 5
    check_same_config(directory, changed)


def test_a_changed_field_is_named(tmp_path):
    directory = finished_with(tmp_path, config())
    with pytest.raises(ValueError, match="model.d_model differ"):
        check_same_config(directory, config(d_model=16))


def test_a_field_added_since_the_run_passes_only_at_its_default(tmp_path):
    directory = finished_with(tmp_path, config())  # ran before "dropout" existed
    defaults = config(dropout=0.0)
    check_same_config(directory, config(dropout=0.0), defaults=defaults)
    with pytest.raises(ValueError, match="model.dropout differ"):
        check_same_config(directory, config(dropout=0.5), defaults=defaults)
    with pytest.raises(ValueError, match="model.dropout differ"):  # no defaults: strict
        check_same_config(directory, config(dropout=0.0))
    # A field the new config lacks but the old run had is still a difference.
    old = finished_with(tmp_path, config(dropout=0.0))
    with pytest.raises(ValueError, match="model.dropout differ"):
        check_same_config(old, config(), defaults=defaults)


def test_the_judge_section_the_pipeline_never_reads_may_differ_or_be_new(tmp_path):
    directory = finished_with(tmp_path, config())  # ran before config.judge existed
    with_judge = config()
    with_judge.judge = ConfigDict({"backend": "llm", "sample_ratio": 0.5})
    check_same_config(directory, with_judge)


def test_locations_compare_by_their_last_component(tmp_path):
    """The same run elsewhere (a lent accelerator reads data/<dataset>, this machine
    /work/shared/data/<dataset>) passes; another dataset folder or start run does not."""
    def located(data_dir, init_workdir):
        cfg = config()
        cfg.data = ConfigDict({"dir": data_dir})
        cfg.rl = ConfigDict({"init_workdir": init_workdir})
        return cfg

    directory = finished_with(tmp_path, located("/work/shared/data/amazon2014_beauty",
                                                "/work/main/workdirs/rl/sft_base"))
    check_same_config(directory, located("data/amazon2014_beauty/", "/tmp/x/rl/sft_base"))
    with pytest.raises(ValueError, match="fields data.dir differ"):
        check_same_config(directory, located("data/amazon2018_scientific", "/tmp/x/rl/sft_base"))
    with pytest.raises(ValueError, match="fields rl.init_workdir differ"):
        check_same_config(directory, located("data/amazon2014_beauty", "/tmp/x/rl/sft_bases"))
    with pytest.raises(ValueError, match="fields rl.init_workdir differ"):
        check_same_config(directory, located("data/amazon2014_beauty", ""))
