"""The public API through the prior protocol, with a fake prior: no model, milliseconds.

The fake codes each chunk as itself (one symbol per hex digit, as the digit priors count), so the
tests check what the API and the container do around any prior: chunking, the header, the
registry's round trip from a recorded identity, the model-loader contract and typed errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import lmgc
from lmgc import priors
from lmgc.errors import CorruptDataError, InputError
from lmgc.priors.base import Coded, check_two_symbols_per_byte
from lmgc.schema import integer, mapping


class StoredPrior:
    """Stores chunks as they are; ``offset`` is a setting that must be recorded and honoured."""

    name = kind = "stored"
    default_chunk_bytes = 100
    loads: list = []

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    @classmethod
    def create(cls, serialization, threads, load):
        return cls()

    @classmethod
    def from_identity(cls, recorded, serialization, load):
        cls.loads.append(load)
        return cls(recorded["offset"])

    @classmethod
    def check_identity(cls, recorded, group):
        mapping(recorded, "stored prior", {"kind", "offset"})
        integer(recorded["offset"], "offset", 0, 255)
        return recorded

    @classmethod
    def environment(cls, identity):
        return {}

    @classmethod
    def describe(cls, identity):
        return [("prior", f"stored, offset {identity['offset']}")]

    @classmethod
    def check_symbol_counts(cls, n_symbols, sizes, serialization, group):
        check_two_symbols_per_byte(n_symbols, sizes)

    def identity(self):
        return {"kind": self.kind, "offset": self.offset}

    def encode(self, stream, chunks, group, batch, progress):
        shifted = [bytes((b + self.offset) % 256 for b in chunk) for chunk in chunks]
        return Coded(shifted, [2 * len(c) for c in chunks], self.identity())

    def decode(self, payloads, n_symbols, sizes, group, batch, progress):
        return [bytes((b - self.offset) % 256 for b in payload) for payload in payloads]


@pytest.fixture
def stored(monkeypatch):
    monkeypatch.setitem(priors.PRIORS, StoredPrior.name, StoredPrior)
    StoredPrior.loads = []
    return StoredPrior


def test_a_prior_object_round_trips_through_the_public_api(stored):
    x = np.arange(60, dtype=np.float32).reshape(3, 20)
    blob = lmgc.Compressor(prior=stored(offset=7)).compress(x)
    info = lmgc.read_container_info(blob)
    assert info["header"]["prior"] == {"kind": "stored", "offset": 7}
    assert info["n_chunks"] == 3 and info["payload_bytes"] == x.nbytes  # default_chunk_bytes = 100
    back = lmgc.decompress(blob)
    assert back.dtype == x.dtype and back.shape == x.shape and back.tobytes() == x.tobytes()
    assert len(stored.loads) == 1  # from_identity received the decoder's model loader


def test_a_registered_name_builds_the_prior(stored):
    blob = lmgc.compress({"w": np.ones(8, np.float16)}, prior="stored", chunk_bytes=4)
    assert lmgc.read_container_info(blob)["n_chunks"] == 4
    assert lmgc.decompress(blob)["w"].tobytes() == np.ones(8, np.float16).tobytes()


def test_the_prior_checks_its_own_recorded_identity(stored):
    from lmgc.container import unpack
    from lmgc.testing import forge

    blob = lmgc.compress(np.zeros(4, np.float32), prior="stored")
    fields = unpack(blob).header.fields
    forged = forge(blob, fields | {"prior": {"kind": "stored", "offset": 999}})
    with pytest.raises(CorruptDataError, match="offset must be an integer"):
        lmgc.decompress(forged)
    with pytest.raises(CorruptDataError, match="unknown prior kind 'gone'"):
        lmgc.decompress(forge(blob, fields | {"prior": {"kind": "gone"}}))


def test_unknown_prior_names_are_input_errors():
    with pytest.raises(InputError, match="unknown prior 'stored'; valid: llm, nibble, hybrid, token-hybrid, context"):
        lmgc.Compressor(prior="stored")


def test_a_config_and_keyword_settings_shape_the_header(stored):
    config = lmgc.CodecConfig(serialization="hex-space", chunk_bytes=8, batch_size=3)
    x = np.arange(6, dtype=np.float32)
    compressor = lmgc.Compressor(prior="stored", config=config, chunk_bytes=12)  # keywords win
    assert compressor.config.chunk_bytes == 12 and compressor.config.batch_size == 3
    codec = lmgc.read_container_info(compressor.compress(x))["header"]["codec"]
    assert codec == {"serialization": "hex-space-be", "group_bytes": 4, "chunk_bytes": 12, "batch_size": 3}
    assert lmgc.Compressor(prior="stored").config.chunk_bytes == 100  # the prior's default


def test_levels_are_chosen_by_name_and_refused_when_unknown(stored):
    assert type(lmgc.Compressor(prior="context", level="fast").prior) is priors.ContextPrior
    with pytest.raises(InputError, match="prior 'context' has no level 'best'; valid: fast"):
        lmgc.Compressor(prior="context", level="best")
    with pytest.raises(InputError, match="prior 'stored' has no level 'fast'; valid: none"):
        lmgc.Compressor(prior="stored", level="fast")
    with pytest.raises(InputError, match="give level= with a prior name"):
        lmgc.Compressor(prior=stored(), level="fast")


def test_compress_file_reports_and_verifies(stored, tmp_path):
    x = np.linspace(-1, 1, 50, dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = lmgc.compress_file(tmp_path / "x.npy", tmp_path / "x.lmgc", prior="stored", verify=True)
    assert result.verified and result.original_bytes == x.nbytes
    assert result.compressed_bytes == (tmp_path / "x.lmgc").stat().st_size
    assert np.load(tmp_path / "x.npy").tobytes() == lmgc.decompress((tmp_path / "x.lmgc").read_bytes()).tobytes()
    with pytest.raises(lmgc.OutputExistsError, match="x.lmgc exists; pass --force"):
        lmgc.compress_file(tmp_path / "x.npy", tmp_path / "x.lmgc", prior="stored")


def test_verify_catches_a_prior_that_decodes_wrongly(stored, tmp_path, monkeypatch):
    monkeypatch.setattr(stored, "decode", lambda self, payloads, *rest: [bytes(len(p)) for p in payloads])
    with pytest.raises(lmgc.VerificationError, match="does not decode to the input"):
        lmgc.compress_file(np.ones(8, np.float32), tmp_path / "x.lmgc", prior="stored", verify=True)
    assert not (tmp_path / "x.lmgc").exists()


def test_info_prints_what_the_prior_describes(stored, tmp_path, capsys):
    from lmgc.cli import main

    lmgc.compress_file(np.ones(8, np.float32), tmp_path / "x.lmgc", prior=stored(offset=3))
    assert main(["info", str(tmp_path / "x.lmgc")]) == 0
    assert "prior:         stored, offset 3" in capsys.readouterr().out
