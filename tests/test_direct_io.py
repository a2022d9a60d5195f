"""Output files written past the page cache (merging/direct.py): same bytes as a buffered write, whatever the
filesystem says, and errors that are not "O_DIRECT refused" reach the caller."""
import errno
import fcntl
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from adamms_eval.merging import direct, stream


@pytest.fixture
def small_stage(monkeypatch):
    # three blocks per staging buffer, so a few KB of pieces cross its end several times
    monkeypatch.setattr(direct, "STAGE", 3 * direct.ALIGN)


def pieces(seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sizes = [1, 7, direct.ALIGN, 3 * direct.ALIGN + 5, 0, 2 * direct.ALIGN - 1, 10_001, 13]
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


def write(path, parts) -> direct.OutputFile:
    with direct.OutputFile(path) as fh:
        for p in parts:
            fh.write(p)
    return fh


def test_bytes_and_size_equal_a_buffered_write(tmp_path, small_stage):
    parts = pieces()
    probe = direct.OutputFile(tmp_path / "probe")
    flags, went_direct = fcntl.fcntl(probe.fd, fcntl.F_GETFL), probe.direct
    probe.close()
    if went_direct:  # the file really is open with O_DIRECT (unless this filesystem refused it at open)
        assert flags & os.O_DIRECT
    fh = write(tmp_path / "out.bin", parts)
    data = (tmp_path / "out.bin").read_bytes()
    assert data == b"".join(parts)  # the zero padding of the last block is cut off again
    assert fh.size == len(data) and len(data) % direct.ALIGN  # a size O_DIRECT alone could not write


def test_refused_at_open_writes_buffered(tmp_path, small_stage, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct.os, "open", no_direct)
    fh = write(tmp_path / "out.bin", pieces(1))
    assert not fh.direct
    assert (tmp_path / "out.bin").read_bytes() == b"".join(pieces(1))


@pytest.mark.parametrize("answer", ["refused", "short"])
def test_refused_or_short_at_a_write_goes_on_buffered(tmp_path, small_stage, monkeypatch, answer):
    probe = direct.OutputFile(tmp_path / "probe")
    probe.close()
    if not probe.direct:
        pytest.skip("this filesystem refuses O_DIRECT at open: the mid-file fallback cannot be reached here")
    real_write, calls = os.write, []

    def first_write_fails(fd, data):
        calls.append(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        if len(calls) == 1 and answer == "refused":
            raise OSError(errno.EINVAL, "Invalid argument")
        if len(calls) == 1:  # a short write leaves an offset O_DIRECT would refuse: the rest must go buffered
            return real_write(fd, memoryview(data)[:100])
        return real_write(fd, data)

    monkeypatch.setattr(direct.os, "write", first_write_fails)
    fh = write(tmp_path / "out.bin", pieces(2) * 3)
    assert not fh.direct and calls[0] and not any(calls[1:]) and len(calls) > 2
    assert (tmp_path / "out.bin").read_bytes() == b"".join(pieces(2) * 3)


def test_disk_full_is_raised_not_swallowed(tmp_path, small_stage, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(direct.os, "write", full)
    fh = direct.OutputFile(tmp_path / "out.bin")
    with pytest.raises(OSError) as e, fh:
        for p in pieces() * 4:
            fh.write(p)
    assert e.value.errno == errno.ENOSPC and fh.fd == -1  # closed without writing the staged tail


def test_switched_off_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(direct.ENV, "0")
    fh = write(tmp_path / "out.bin", pieces(3))
    assert not fh.direct
    assert not fcntl.fcntl(os.open(tmp_path / "out.bin", os.O_RDONLY), fcntl.F_GETFL) & os.O_DIRECT
    assert (tmp_path / "out.bin").read_bytes() == b"".join(pieces(3))


@pytest.mark.parametrize("setting", ["1", "0"])
def test_safetensors_written_either_way_load(tmp_path, small_stage, monkeypatch, setting):
    monkeypatch.setenv(direct.ENV, setting)
    tensors = {"a": torch.randn(37, 11), "b": torch.arange(1001, dtype=torch.int64), "c": torch.randn(5).bfloat16()}
    spec = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    stream.write_safetensors(tmp_path / "x.safetensors", spec, lambda k: iter(tensors[k].split(4)))
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v)
