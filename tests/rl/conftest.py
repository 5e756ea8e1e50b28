"""The decoding tests' tiny catalog, toy policy and requests, shared with the RL tests."""

from tests.decoding.conftest import catalog, model, requests  # noqa: F401  (fixtures)
