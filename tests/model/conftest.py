import json
from pathlib import Path

import pytest
import torch

from braunet.model import BRAUNetConfig, load_official

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"official fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def small_config(official_dir) -> BRAUNetConfig:
    return BRAUNetConfig(**json.loads((official_dir / "small_config.json").read_text())["kwargs"])


@pytest.fixture(scope="session")
def small_state_dict(official_dir) -> dict:
    return torch.load(official_dir / "small_state_dict.pt", weights_only=True)


@pytest.fixture(scope="session")
def small_io(official_dir) -> dict:
    return torch.load(official_dir / "small_io.pt", weights_only=True)


@pytest.fixture()
def small_model(small_state_dict, small_config):
    return load_official(small_state_dict, small_config)
