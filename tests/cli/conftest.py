"""The CLI tests reuse the engine tests' fixtures: the shared data folder and the tiny checkpoints."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_braunet_infer_fixtures", Path(__file__).parents[1] / "infer" / "conftest.py"
)
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

data_dir = _fixtures.data_dir
ct_model_dir = _fixtures.ct_model_dir
rgb_model_dir = _fixtures.rgb_model_dir
make_checkpoint = _fixtures.make_checkpoint
