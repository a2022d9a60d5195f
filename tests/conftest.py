import os
import signal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tiny zoo and its processors never need the Hub


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The tiny checkpoint zoo (adamms_eval.testing.tiny), built once per test session: {name: Path}."""
    from adamms_eval.testing.tiny import build_zoo

    return build_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture
def python_sigint_handler():
    """KeyboardInterrupt on SIGINT, as in an interactive shell, even when pytest inherited SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
