import os

import pytest

# never touch the network: the hub libraries must work from local files only
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_TRACKING_URI", "")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama with a tokenizer trained on the fixture texts (session-wide)."""
    from gluerl.testing import fixture_texts, make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", fixture_texts())
