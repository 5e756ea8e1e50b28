"""Fixtures shared by the decoding tests: the tiny catalog, a toy policy and a few requests."""

import jax
import pytest

from tests.decoding.toy import SIDS, B, HashModel, N, histories


@pytest.fixture(scope="module")
def catalog():
    return jax.device_put(SIDS.catalog())


@pytest.fixture(scope="module")
def model():
    return HashModel.create(SIDS.level_sizes, N)


@pytest.fixture(scope="module")
def requests():
    return histories(B, N)
