import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tiny zoo and its processors never need the Hub


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The tiny checkpoint zoo (adamms_eval.testing.tiny), built once per test session: {name: Path}."""
    from adamms_eval.testing.tiny import build_zoo

    return build_zoo(tmp_path_factory.mktemp("zoo"))
