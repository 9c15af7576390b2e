"""Shared fixtures."""

import os

# Tests never download: the Hugging Face hub is offline for every test (a test may point HF_HUB_CACHE elsewhere).
os.environ["HF_HUB_OFFLINE"] = "1"

from tests.fault_setup import encoder_dir, setup_factory  # noqa: F401
from tests.hub_cache import hub_cache  # noqa: F401
from tests.lsserver import label_studio  # noqa: F401
