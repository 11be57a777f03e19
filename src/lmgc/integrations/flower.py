"""Flower: compress the arrays ClientApps send back, restore them on the server bit-exactly.

Client side, the Mod :func:`lmgc_mod` (``ClientApp(mods=[lmgc_mod])``) replaces each NumPy
:class:`~flwr.app.Array` of an outgoing reply by its lmgc container: same ``dtype`` and
``shape``, ``stype`` :data:`STYPE` (``"lmgc"``). Server side, :class:`LmgcGrid` wraps the Grid a
ServerApp receives and decodes every reply it hands out, so a strategy aggregates exactly the
bytes the clients computed. Messages without lmgc arrays pass through untouched; an lmgc array
that does not decode raises an :class:`~lmgc.errors.LmgcError` naming the record, the key and
the node.

Why a Grid wrapper, not a Strategy wrapper: ``Strategy.start`` calls its own
``aggregate_train``, so wrapping a strategy means re-implementing ``start``; every strategy and
every hand-written ServerApp loop gets its replies from the Grid, so decoding there covers them
all. :func:`decode_message` is the same step for code that handles messages itself.

Run config (``[tool.flwr.app.config]`` in ``pyproject.toml``, or ``flwr run --run-config``):

- ``lmgc-prior`` (default ``"context"``): the lmgc prior. ``context`` needs no model and codes
  megabytes per second; the LLM priors (``llm``, ``nibble``, ``hybrid``) code bytes per second.
- ``lmgc-min-bytes`` (default 4096): smaller arrays are sent as they are; every compressed array
  pays a container header (~120 B) and a fixed setup cost (tens of ms with the context prior).

An array is also sent as it is when its container would not be smaller, when lmgc does not code
its dtype (complex, unsigned 32/64-bit), or when it is not C-ordered: the server rebuilds arrays
with ``np.save``, which reproduces the client's bytes exactly for C-ordered arrays.

>>> from flwr.clientapp import ClientApp
>>> from flwr.serverapp import ServerApp
>>> from flwr.serverapp.strategy import FedAvg
>>> client_app = ClientApp(mods=[lmgc_mod])  # then @client_app.train() etc. as usual
>>> server_app = ServerApp()
>>> @server_app.main()
... def main(grid, context):
...     model = ...  # the initial ArrayRecord
...     FedAvg().start(grid=LmgcGrid(grid), initial_arrays=model, num_rounds=3)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

import numpy as np

try:
    from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
    from flwr.clientapp.typing import ClientAppCallable
    from flwr.common.constant import SType
    from flwr.serverapp import Grid
except ImportError as exc:  # an optional extra
    raise ImportError(f"lmgc.integrations.flower needs Flower: pip install 'lmgc[flower]' ({exc})") from exc

import lmgc
from lmgc.errors import CorruptDataError, InputError, LmgcError, UnsupportedDtypeError

__all__ = [
    "DEFAULT_MIN_BYTES",
    "DEFAULT_PRIOR",
    "MIN_BYTES_KEY",
    "PRIOR_KEY",
    "STYPE",
    "LmgcGrid",
    "decode_message",
    "lmgc_mod",
]

STYPE = "lmgc"  #: ``Array.stype`` of an array whose ``data`` is an lmgc container
PRIOR_KEY = "lmgc-prior"
MIN_BYTES_KEY = "lmgc-min-bytes"
DEFAULT_PRIOR = "context"
DEFAULT_MIN_BYTES = 4096

_LOG = logging.getLogger("flwr")  # Flower's own logger: the sizes show next to message_size_mod's


@functools.lru_cache(maxsize=4)
def _compressor(prior: str) -> lmgc.Compressor:
    """One per prior and process: an LLM prior loads its model once, not once per reply."""
    return lmgc.Compressor(prior=prior)


def _settings(context: Context) -> tuple[str, int]:
    prior = context.run_config.get(PRIOR_KEY, DEFAULT_PRIOR)
    min_bytes = context.run_config.get(MIN_BYTES_KEY, DEFAULT_MIN_BYTES)
    if not isinstance(prior, str):
        raise InputError(f"run config {PRIOR_KEY!r} must name an lmgc prior such as 'context', not {prior!r}")
    if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0:
        raise InputError(f"run config {MIN_BYTES_KEY!r} must be a byte count >= 0, not {min_bytes!r}")
    return prior, min_bytes


def _encode_array(array: Array, compressor: lmgc.Compressor, min_bytes: int) -> Array:
    """The lmgc form of ``array``, or ``array`` itself where that would not be smaller or exact."""
    if array.stype != SType.NUMPY or len(array.data) < min_bytes:
        return array
    values = array.numpy()
    if not values.flags.c_contiguous:  # np.save on the server would write it in C order
        return array
    try:
        blob = compressor.compress(values)
    except UnsupportedDtypeError:
        return array
    if len(blob) >= len(array.data):
        return array
    return Array(dtype=array.dtype, shape=tuple(array.shape), stype=STYPE, data=blob)


def _encode_record(record: ArrayRecord, compressor: lmgc.Compressor, min_bytes: int) -> ArrayRecord:
    encoded = {key: _encode_array(array, compressor, min_bytes) for key, array in record.items()}
    if all(encoded[key] is array for key, array in record.items()):
        return record
    return ArrayRecord(encoded)


def _array_bytes(content: RecordDict) -> tuple[int, int, int]:
    """(bytes as ``ArrayRecord.count_bytes`` counts them, arrays, lmgc arrays) of a message."""
    arrays = [a for record in content.array_records.values() for a in record.values()]
    size = sum(record.count_bytes() for record in content.array_records.values())
    return size, len(arrays), sum(a.stype == STYPE for a in arrays)


def lmgc_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client Mod: compress the arrays of the reply ``call_next`` returns, losslessly.

    Every ArrayRecord of the reply is replaced by a copy whose large NumPy arrays are lmgc
    containers (see the module docstring for what is left as it is and why); the ArrayRecords
    the app returned, which it may also keep in its state, are not modified. The array bytes
    before and after are logged on Flower's logger, as ``message_size_mod`` does (placed before
    ``lmgc_mod`` in ``mods``, ``message_size_mod`` logs the compressed message's size).

    Raises:
        InputError: ``lmgc-prior`` or ``lmgc-min-bytes`` in the run config is not valid.
    """
    prior, min_bytes = _settings(context)
    reply = call_next(msg, context)
    if not reply.has_content():  # an error reply carries no arrays
        return reply
    content = reply.content
    compressor = _compressor(prior)
    records = {
        name: _encode_record(record, compressor, min_bytes) if isinstance(record, ArrayRecord) else record
        for name, record in content.items()
    }
    if any(records[name] is not record for name, record in content.items()):
        reply.content = RecordDict(records)
    before, n_arrays, _ = _array_bytes(content)
    after, _, n_coded = _array_bytes(reply.content)
    if n_arrays:
        _LOG.info("lmgc_mod: outgoing arrays %i bytes, %i bytes with lmgc (%i of %i arrays compressed, prior %s)",
                  before, after, n_coded, n_arrays, prior)  # fmt: skip
    return reply


def _decode_array(where: str, array: Array, decompressor: lmgc.Decompressor) -> Array:
    try:
        values = decompressor.decompress(array.data)
    except LmgcError as exc:  # same class, with the place it happened
        raise type(exc)(f"{where}: {exc}") from exc
    if not isinstance(values, np.ndarray):
        raise CorruptDataError(f"{where} decodes to a {type(values).__name__}, not one array: the message is corrupt")
    if str(values.dtype) != array.dtype or tuple(values.shape) != tuple(array.shape):
        raise CorruptDataError(
            f"{where} decodes to {values.dtype} {tuple(values.shape)} but the message declares "
            f"{array.dtype} {tuple(array.shape)}: the message is corrupt"
        )
    return Array(values)


def decode_message(msg: Message, decompressor: lmgc.Decompressor | None = None) -> Message:
    """Restore the lmgc arrays of ``msg`` in place and return it; other messages are left alone.

    Each restored array is ``Array(ndarray)``, byte for byte the array the client's app put in
    its reply. Records without lmgc arrays keep their identity.

    Args:
        msg: a reply received from a client.
        decompressor: decodes the containers; default ``lmgc.Decompressor()`` (context-prior and
            embedded-model containers only, at most 4 GiB per array).

    Raises:
        LmgcError: an lmgc array does not decode: :class:`~lmgc.errors.CorruptDataError` for
            damaged bytes or a dtype/shape that disagrees with the message, other subclasses as
            :meth:`lmgc.Decompressor.decompress` raises them; the message names the record, the
            key and the sending node.
    """
    if not msg.has_content():
        return msg
    decompressor = decompressor or lmgc.Decompressor()
    node = msg.metadata.src_node_id
    records = {}
    for name, record in msg.content.items():
        if isinstance(record, ArrayRecord) and any(a.stype == STYPE for a in record.values()):
            record = ArrayRecord({
                key: _decode_array(f"lmgc array {key!r} of record {name!r} from node {node}", array, decompressor)
                if array.stype == STYPE else array
                for key, array in record.items()
            })  # fmt: skip
        records[name] = record
    if any(records[name] is not record for name, record in msg.content.items()):
        msg.content = RecordDict(records)
    return msg


class LmgcGrid(Grid):
    """A Grid whose replies carry the clients' original arrays: lmgc arrays are decoded on receipt.

    Wrap the Grid a ServerApp's main gets (``strategy.start(grid=LmgcGrid(grid), ...)``);
    sending, node queries and run information are delegated unchanged.

    Args:
        grid: the Grid to wrap.
        decompressor: see :func:`decode_message`.
    """

    def __init__(self, grid: Grid, decompressor: lmgc.Decompressor | None = None) -> None:
        self.grid = grid
        self.decompressor = decompressor or lmgc.Decompressor()

    def set_run(self, run) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # fmt: skip
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self):
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [decode_message(m, self.decompressor) for m in self.grid.pull_messages(message_ids)]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = self.grid.send_and_receive(messages, timeout=timeout)
        return [decode_message(m, self.decompressor) for m in replies]
