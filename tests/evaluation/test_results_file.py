"""The results-file helpers: the value every run must share."""

import pytest

from sgrec_jax.evaluation.results_file import agreed_value


def test_agreed_value_is_the_shared_value_or_an_error_naming_each_run():
    assert agreed_value({"sft/seed_0": 60, "a2po/seed_0": 60}, "users") == 60
    with pytest.raises(ValueError, match=r"disagree on users: \{'sft/seed_0': 60, "
                                         r"'a2po/seed_0': 59\}"):
        agreed_value({"sft/seed_0": 60, "a2po/seed_0": 59}, "users")
    with pytest.raises(ValueError, match="no runs to take users from"):
        agreed_value({}, "users")
