import os

import numpy as np
import pytest

# keep compiled kernels of the test run in a private cache folder only when asked
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(12345)
