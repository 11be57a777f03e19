"""Flower integration: FedAvg rounds in process, with and without ``lmgc_mod``.

Flower's simulation engine needs ray, which lmgc does not install; so the ServerApp and two
ClientApps run in this process and :class:`_LoopbackGrid` carries messages between them the way
Flower ships them: every object of a message (down to its array chunks) is deflated to bytes and
inflated from those bytes on the other side. The bytes it counts are what the wire carries.
"""

from __future__ import annotations

import logging
import re
import uuid

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import (
    Array,
    ArrayRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import message_size_mod
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.task_identity import TaskIdentity

from lmgc.errors import CorruptDataError, InputError
from lmgc.integrations import flower
from lmgc.integrations.flower import STYPE, LmgcGrid, decode_message, lmgc_mod

RUN_ID = 7
NODES = (1, 2)
LR = np.float32(0.05)


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """What Flower's ServerApp runtime sets before a ServerApp creates messages."""
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_run_id", RUN_ID)
    monkeypatch.setattr(TaskIdentity, "_node_id", SUPERLINK_NODE_ID)


def _client_data(node: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(node)
    x = rng.standard_normal((64, 48), dtype=np.float32)
    y = x @ rng.standard_normal((48, 32), dtype=np.float32)
    return x, y


def _train(msg: Message, context: Context) -> Message:
    """A few SGD steps of linear regression on this node's data; replies the new model."""
    arrays = msg.content["arrays"]
    w, b = arrays["w"].numpy(), arrays["b"].numpy()
    x, y = _client_data(context.node_id)
    for _ in range(3):
        err = x @ w + b - y
        w = w - LR * (x.T @ err) / np.float32(len(x))
        b = b - LR * err.mean(axis=0)
    content = RecordDict({
        "arrays": ArrayRecord({"w": Array(w), "b": Array(b)}),
        "metrics": MetricRecord({"num-examples": len(x)}),
    })  # fmt: skip
    return Message(content, reply_to=msg)


def _client_app(mods: list) -> ClientApp:
    app = ClientApp(mods=mods)
    app.train()(_train)
    return app


def _ship(msg: Message) -> tuple[Message, int]:
    """``msg`` as the other side receives it, and the bytes of all its deflated objects."""
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(msg).items()}
    size = sum(map(len, contents.values()))
    received = inflate_object_from_contents(msg.object_id, contents)
    received.metadata.__dict__["_message_id"] = msg.metadata.message_id  # ids travel outside the object
    return received, size


class _LoopbackGrid(Grid):
    """Delivers each message to its node's ClientApp at push time; replies wait to be pulled."""

    def __init__(self, client_mods: list, run_config: dict) -> None:
        self.apps = {node: _client_app(client_mods) for node in NODES}
        self.contexts = {node: Context(RUN_ID, node, {}, RecordDict(), run_config) for node in NODES}
        self.replies: dict[str, Message] = {}
        self.bytes_down = self.bytes_up = 0
        self.reply_array_bytes: list[int] = []  # ArrayRecord.count_bytes() of each reply sent

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return list(NODES)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as Flower's InMemoryGrid does
            delivered, size = _ship(msg)
            self.bytes_down += size
            node = msg.metadata.dst_node_id
            reply = self.apps[node](delivered, self.contexts[node])
            reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.reply_array_bytes.append(sum(r.count_bytes() for r in reply.content.array_records.values()))
            self.replies[msg.metadata.message_id], size = _ship(reply)
            self.bytes_up += size
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids):
        replies = [self.replies.pop(i) for i in message_ids if i in self.replies]
        return sorted(replies, key=lambda m: m.metadata.src_node_id)  # a fixed aggregation order

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))


def _initial_model() -> ArrayRecord:
    rng = np.random.default_rng(0)
    return ArrayRecord({"w": Array(rng.standard_normal((48, 32), dtype=np.float32) * np.float32(0.1)),
                        "b": Array(np.zeros(32, dtype=np.float32))})  # fmt: skip


def _federate(client_mods: list, wrap, run_config: dict | None = None, rounds: int = 2):
    """FedAvg for ``rounds`` rounds through a ServerApp; the final model and the grid used."""
    grid, result = _LoopbackGrid(client_mods, run_config or {}), {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_evaluate=0.0)
        result["arrays"] = strategy.start(grid=wrap(grid), initial_arrays=_initial_model(), num_rounds=rounds).arrays

    server(grid, Context(RUN_ID, SUPERLINK_NODE_ID, {}, RecordDict(), {}))
    return result["arrays"], grid


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def flwr_log():
    handler, logger = _Lines(), logging.getLogger("flwr")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_fedavg_with_lmgc_mod_aggregates_bit_identical_arrays_from_fewer_bytes(flwr_log):
    plain, plain_grid = _federate([], lambda grid: grid)
    coded, coded_grid = _federate([message_size_mod, lmgc_mod], LmgcGrid)

    assert list(coded) == ["w", "b"]
    for key in plain:
        assert coded[key].stype == plain[key].stype == "numpy.ndarray"
        assert coded[key].data == plain[key].data, key
    assert coded_grid.bytes_down == plain_grid.bytes_down  # the server's messages are unchanged
    assert coded_grid.bytes_up < plain_grid.bytes_up
    print(f"\nclient -> server bytes, 2 rounds x 2 clients: {plain_grid.bytes_up} plain, "
          f"{coded_grid.bytes_up} with lmgc_mod ({coded_grid.bytes_up / plain_grid.bytes_up:.1%})")  # fmt: skip

    # the Mod reports each reply's array bytes before and after, as message_size_mod does
    reports = [re.search(r"lmgc_mod: outgoing arrays (\d+) bytes, (\d+) bytes with lmgc \((\d) of (\d)", line)
               for line in flwr_log]  # fmt: skip
    reports = [tuple(map(int, m.groups())) for m in reports if m]
    assert [r[0] for r in reports] == plain_grid.reply_array_bytes
    assert [r[1] for r in reports] == coded_grid.reply_array_bytes
    assert all(r[2:] == (1, 2) for r in reports)  # w (6 KB) is coded, b (128 B) is below lmgc-min-bytes
    # and message_size_mod, outside lmgc_mod, logs the compressed message: those arrays plus the metrics
    sizes = [int(m.group(1)) for line in flwr_log if (m := re.search(r"Outgoing message size: (\d+) bytes", line))]
    metrics = MetricRecord({"num-examples": 64}).count_bytes()
    assert sizes == [r[1] + metrics for r in reports]


def _reply(run_config: dict | None = None, arrays: dict | None = None) -> Message:
    """One reply through ``lmgc_mod``, as node 1 sends it."""
    ins = Message(RecordDict(), dst_node_id=1, message_type="train")
    ins.metadata.__dict__["_message_id"] = "ins"
    arrays = arrays or {"w": np.linspace(-1, 1, 4096, dtype=np.float32), "b": np.ones(8, np.float32)}
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": 3})})  # fmt: skip
    context = Context(RUN_ID, 1, {}, RecordDict(), run_config or {})
    return lmgc_mod(ins, context, lambda msg, ctx: Message(content, reply_to=msg))


def test_lmgc_arrays_are_marked_and_keep_dtype_and_shape():
    reply = _reply()
    w = reply.content["arrays"]["w"]
    assert (w.stype, w.dtype, w.shape) == (STYPE, "float32", (4096,))
    assert reply.content["arrays"]["b"].stype == "numpy.ndarray"
    assert decode_message(reply).content["arrays"]["w"].data == Array(np.linspace(-1, 1, 4096, dtype=np.float32)).data


def test_messages_and_arrays_lmgc_does_not_help_pass_through_untouched(monkeypatch):
    kept = {
        "small": np.ones(8, np.float32),  # below lmgc-min-bytes
        "complex": np.ones(2048, np.complex64),  # a dtype lmgc does not code
        "fortran": np.asfortranarray(np.arange(4096, dtype=np.float32).reshape(64, 64)),  # np.save keeps F order
    }
    reply = _reply(arrays=kept)
    record = reply.content["arrays"]
    assert [a.stype for a in record.values()] == ["numpy.ndarray"] * 3
    assert all(record[k].data == Array(v).data for k, v in kept.items())

    content = reply.content
    assert decode_message(reply).content is content  # nothing to restore: the very same objects
    error = Message(Error(code=0, reason="failed"), reply_to=reply)
    assert decode_message(error) is error and lmgc_mod(reply, Context(RUN_ID, 1, {}, RecordDict(), {}),
                                                        lambda msg, ctx: error) is error  # fmt: skip

    class Expanding:  # a prior that makes the data larger: the array is sent as it is
        def compress(self, values):
            return bytes(values.nbytes + 1024)

    monkeypatch.setattr(flower, "_compressor", lambda prior: Expanding())
    assert _reply().content["arrays"]["w"].stype == "numpy.ndarray"


def _flip_a_byte_of_w(msg: Message, context: Context, call_next) -> Message:
    """A Mod outside lmgc_mod: damages the coded ``w`` on its way to the server."""
    reply = call_next(msg, context)
    w = reply.content["arrays"]["w"]
    damaged = bytearray(w.data)
    damaged[len(damaged) // 2] ^= 0x40
    reply.content["arrays"]["w"] = Array(dtype=w.dtype, shape=w.shape, stype=w.stype, data=bytes(damaged))
    return reply


def test_corrupt_lmgc_array_raises_lmgc_error_on_the_server():
    with pytest.raises(CorruptDataError, match=r"^lmgc array 'w' of record 'arrays' from node 1: .*corrupt"):
        _federate([_flip_a_byte_of_w, lmgc_mod], LmgcGrid)

    reply = _reply()
    w = reply.content["arrays"]["w"]
    reply.content["arrays"]["w"] = Array(dtype=w.dtype, shape=(64, 65), stype=STYPE, data=w.data)
    with pytest.raises(CorruptDataError, match=r"decodes to float32 \(4096,\) but the message declares "
                                               r"float32 \(64, 65\): the message is corrupt"):  # fmt: skip
        decode_message(reply)


def test_run_config_sets_prior_and_threshold_and_rejects_bad_values():
    assert _reply({"lmgc-min-bytes": 1 << 20}).content["arrays"]["w"].stype == "numpy.ndarray"
    assert _reply({"lmgc-prior": "context", "lmgc-min-bytes": 0}).content["arrays"]["w"].stype == STYPE
    with pytest.raises(InputError, match="unknown prior 'zstd'"):
        _reply({"lmgc-prior": "zstd"})
    with pytest.raises(InputError, match="'lmgc-min-bytes' must be a byte count >= 0, not -1"):
        _reply({"lmgc-min-bytes": -1})
