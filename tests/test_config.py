"""CodecConfig: everything besides the prior that shapes the bits, validated once, up front."""

from __future__ import annotations

import pytest

from lmgc import config as config_module
from lmgc.config import CodecConfig, default_threads, model_dtype
from lmgc.errors import SerializationError
from lmgc.serialize import Serialization


@pytest.mark.parametrize("settings, message", [
    ({"serialization": "hex-tab"}, "bad serialization 'hex-tab'"),
    ({"serialization": 7}, "serialization must be a spec string, not 7"),
    ({"group_bytes": 3}, "bytes per group must be 1, 2, 4 or 8, not 3"),
    ({"chunk_bytes": 0}, r"chunk size must be in \[1, 67108864\], not 0"),
    ({"chunk_bytes": 1 << 27}, r"chunk size must be in \[1, 67108864\], not 134217728"),
    ({"batch_size": True}, r"batch size must be in \[1, 65536\], not True"),
    ({"threads": -1}, r"threads must be in \[1, 4096\], not -1"),
    ({"dtype": "int8"}, "model dtype must be auto or one of"),
])  # fmt: skip
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(SerializationError, match=message):
        CodecConfig(**settings)


def test_the_serialization_is_parsed_once_and_kept_parsed():
    config = CodecConfig(serialization="hex-space")
    assert config.serialization == Serialization.parse("hex-space-be")
    assert CodecConfig(serialization=config.serialization) == config


def test_settings_replace_fields_and_unknown_names_are_type_errors():
    base = CodecConfig(chunk_bytes=64, batch_size=3)
    assert CodecConfig.from_settings(base, {"batch_size": 5}) == CodecConfig(chunk_bytes=64, batch_size=5)
    assert CodecConfig.from_settings(None, {}) == CodecConfig()
    with pytest.raises(TypeError, match="unexpected codec setting.* chunk_size; valid: serialization"):
        CodecConfig.from_settings(None, {"chunk_size": 4})


def test_prior_defaults_fill_only_what_is_unset():
    assert CodecConfig().for_prior(1024).chunk_bytes == 1024
    assert CodecConfig(chunk_bytes=8).for_prior(1024).chunk_bytes == 8
    assert CodecConfig().for_prior(1).threads == default_threads()
    assert CodecConfig(threads=3).for_prior(1).threads == 3


def test_group_is_the_configured_size_or_the_commonest_element_size():
    assert CodecConfig(group_bytes=2).group_for([(4, 100)]) == 2
    assert CodecConfig().group_for([(4, 100), (2, 300), (4, 100)]) == 2
    assert CodecConfig().group_for([(4, 100), (2, 100)]) == 4  # a tie: the first seen
    assert CodecConfig().group_for([]) == 4


def test_the_header_codec_field_keeps_its_order():
    codec = CodecConfig(chunk_bytes=512).header_codec(4, 16)
    assert list(codec) == ["serialization", "group_bytes", "chunk_bytes", "batch_size"]
    assert codec == {"serialization": "hex-comma-be", "group_bytes": 4, "chunk_bytes": 512, "batch_size": 16}


def test_auto_dtype_is_bfloat16_only_where_it_is_native(monkeypatch):
    assert CodecConfig().dtype == "auto"
    assert model_dtype("float16", "cpu") == "float16"  # an explicit choice stands
    assert model_dtype("auto", "cuda:0") == "bfloat16"
    monkeypatch.setattr(config_module, "_cpu_has_native_bf16", lambda: False)
    assert model_dtype("auto", "cpu") == "float32"  # emulated bfloat16 would be slower
    monkeypatch.setattr(config_module, "_cpu_has_native_bf16", lambda: True)
    assert model_dtype("auto", "cpu") == "bfloat16"
