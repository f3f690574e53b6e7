"""Fixtures for the model tests: the official code's recorded small model (``official_fixtures``, tests/conftest.py)."""

import json

import pytest
import torch

from braunet.model import BRAUNetConfig, load_official


@pytest.fixture(scope="session")
def small_config(official_fixtures) -> BRAUNetConfig:
    return BRAUNetConfig(**json.loads((official_fixtures / "small_config.json").read_text())["kwargs"])


@pytest.fixture(scope="session")
def small_state_dict(official_fixtures) -> dict:
    return torch.load(official_fixtures / "small_state_dict.pt", weights_only=True)


@pytest.fixture(scope="session")
def small_io(official_fixtures) -> dict:
    return torch.load(official_fixtures / "small_io.pt", weights_only=True)


@pytest.fixture()
def small_model(small_state_dict, small_config):
    return load_official(small_state_dict, small_config)
