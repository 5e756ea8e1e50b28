"""finished_run: a directory that is not a finished rl run is one clear error naming what it
lacks; a finished one gives its config and results."""

import pytest

from sgrec_jax.stages.finished_run import check_rl_run_dir


def test_a_directory_that_is_not_an_rl_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"is not a finished rl run: no config.json"):
        check_rl_run_dir(tmp_path)


def test_a_run_without_rl_results_or_checkpoints_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "results.json").write_text('{"sft/best_step": 10}')
    with pytest.raises(ValueError, match=r"results.json has no rl results"):
        check_rl_run_dir(tmp_path)
    (tmp_path / "results.json").write_text('{"rl/last_step": 10}')
    with pytest.raises(ValueError, match=r"no rl checkpoints in .*rl/checkpoints"):
        check_rl_run_dir(tmp_path)
    (tmp_path / "rl" / "checkpoints").mkdir(parents=True)
    config, results = check_rl_run_dir(tmp_path)
    assert results["rl/last_step"] == 10 and dict(config) == {}
