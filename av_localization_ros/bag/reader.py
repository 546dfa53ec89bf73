"""Tolerant rosbag2 reading (mcap or sqlite3) for the replay tool and the tests.

``read_bag(path)`` yields :class:`BagMessage` in log-time order. Messages are decoded with the
bag's own message definitions (mcap schemas / sqlite3 ``message_definitions``), so bags
recorded on other ROS distributions or with newer type versions decode correctly; types the
bag does not define come from :data:`~av_localization_ros.bag.messages.TYPESTORE` (Humble +
audio_common_msgs).

A damaged bag never raises out of the iteration. The reader first uses ``rosbags``' Reader;
when the bag cannot be opened (file cut short, missing footer or metadata.yaml after a
crashed recorder, corrupt sqlite pages) or fails part-way, it falls back to a direct scan of
the storage files that recovers every readable message (complete mcap records up to the cut,
every sqlite row whose pages are intact) and resumes exactly after the last message already
yielded. What happened is in ``reader.report`` (:class:`BagReadReport`):

>>> reader = read_bag("scene_bag", topics=["/audio/audio"])
>>> for m in reader:
...     handle(m.topic, m.stamp_ns, m.msg)
>>> reader.report.messages_read, reader.report.messages_skipped, reader.report.truncated
"""
from __future__ import annotations

import heapq
import logging
import sqlite3
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import ConnectionExtRosbag2, QosDurability
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from .messages import TYPESTORE

if sys.version_info >= (3, 14):  # pragma: no cover
    from compression import zstd
else:
    from backports import zstd

log = logging.getLogger(__name__)

MAX_ERRORS = 100  # messages kept in BagReadReport.errors (all are counted in error_count)
_MAX_ERRORS_PER_KEY = 3  # e.g. per topic for repeated deserialisation failures


@dataclass(frozen=True)
class BagMessage:
    """One message: ``stamp_ns`` is the bag's log (receive) time; ``msg`` the decoded message
    (or the raw CDR bytes with ``read_bag(..., raw=True)``)."""

    topic: str
    msgtype: str
    stamp_ns: int
    msg: Any


@dataclass
class BagReadReport:
    """What a read produced and what went wrong; complete once the iteration has ended.

    ``messages_read``: messages yielded. ``messages_skipped``: messages found but not
    decodable (corrupt payload, unknown type, unreadable row). ``truncated``: the storage was
    cut short or had unreadable regions, so an unknown number of messages is lost.
    ``recovered``: the fallback scan (not rosbags' reader) produced some of the messages.
    """

    path: str
    messages_read: int = 0
    messages_skipped: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    truncated: bool = False
    recovered: bool = False
    per_topic: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.error_count or self.truncated or self.messages_skipped)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "messages_read": self.messages_read,
                "messages_skipped": self.messages_skipped, "error_count": self.error_count,
                "truncated": self.truncated, "recovered": self.recovered,
                "errors": list(self.errors), "per_topic": dict(self.per_topic)}


class _Errors:
    """Caps and de-duplicates the error messages going into a report."""

    def __init__(self, report: BagReadReport):
        self.report = report
        self.per_key: Counter = Counter()

    def __call__(self, message: str, key: Any = None) -> None:
        self.report.error_count += 1
        if key is not None:
            self.per_key[key] += 1
            if self.per_key[key] > _MAX_ERRORS_PER_KEY:
                return
            if self.per_key[key] == _MAX_ERRORS_PER_KEY:
                message += " (further errors of this kind are counted, not listed)"
        if len(self.report.errors) < MAX_ERRORS:
            self.report.errors.append(message)
            log.warning("%s: %s", self.report.path, message)
        elif len(self.report.errors) == MAX_ERRORS:
            self.report.errors.append("... more errors (see error_count)")


# --------------------------------------------------------------------------------------------
# Typestore from a bag's own definitions
# --------------------------------------------------------------------------------------------

_IDL_SEP = "=" * 80 + "\n"


def _parse_definition(msgtype: str, fmt: str, text: str) -> dict:
    if not text.strip():
        return {}
    if fmt in ("ros2idl", "omgidl", "idl"):
        if text.startswith(_IDL_SEP + "IDL: "):
            types: dict = {}
            for section in text.split(_IDL_SEP)[1:]:
                _, body = section.split("\n", 1)
                types.update(get_types_from_idl(body))
            return types
        return get_types_from_idl(text)
    return get_types_from_msg(text, msgtype)


def _same_fields(a: tuple, b: tuple) -> bool:
    fa = [(name.lower(), desc) for name, desc in a[1]]
    fb = [(name.lower(), desc) for name, desc in b[1]]
    return fa == fb


def bag_typestore(definitions: dict[str, tuple[str, str]],
                  on_error=lambda message: None) -> Typestore:
    """Typestore for a bag: its own definitions ``{msgtype: (encoding, text)}`` (encoding
    'ros2msg' or 'ros2idl') take precedence, TYPESTORE fills in the rest. Returns TYPESTORE
    itself when the bag defines nothing new or different."""
    types: dict = {}
    for msgtype, (fmt, text) in definitions.items():
        try:
            types.update(_parse_definition(msgtype, fmt, text))
        except Exception as exc:  # noqa: BLE001 - a foreign definition must not stop reading
            on_error(f"cannot parse the bag's definition of {msgtype} ({exc}); "
                     "using the built-in one if any")
    differing = {k for k, v in types.items()
                 if k not in TYPESTORE.fielddefs or not _same_fields(TYPESTORE.fielddefs[k], v)}
    if not differing:
        return TYPESTORE
    store = get_typestore(Stores.EMPTY)
    try:
        store.register(types)
    except Exception as exc:  # noqa: BLE001
        on_error(f"cannot register the bag's message definitions ({exc}); using built-ins")
        return TYPESTORE
    store.register({k: v for k, v in TYPESTORE.fielddefs.items() if k not in store.fielddefs})
    return store


class _Decoder:
    def __init__(self, report: BagReadReport, error: _Errors, raw: bool):
        self.report, self.error, self.raw = report, error, raw
        self.store: Typestore = TYPESTORE

    def set_definitions(self, definitions: dict[str, tuple[str, str]]) -> None:
        self.store = bag_typestore(definitions, self.error)

    def decode(self, topic: str, msgtype: str, stamp: int, data: Any) -> BagMessage | None:
        if self.raw:
            return BagMessage(topic, msgtype, int(stamp), bytes(data))
        if msgtype not in self.store.fielddefs:
            self.report.messages_skipped += 1
            self.error(f"no definition for {msgtype} on {topic}: messages skipped",
                       key=("type", msgtype))
            return None
        try:
            msg = self.store.deserialize_cdr(data, msgtype)
        except Exception as exc:  # noqa: BLE001 - corrupt payloads are counted, not raised
            self.report.messages_skipped += 1
            self.error(f"{topic} @ {stamp}: cannot deserialize {msgtype}: {exc!r}",
                       key=("topic", topic))
            return None
        return BagMessage(topic, msgtype, int(stamp), msg)


class _Resume:
    """Where the normal path stopped: skip what it already yielded when the scan takes over.

    Keeps references to the messages of the latest log time only (no copies, no hashing)."""

    def __init__(self):
        self.stamp: int | None = None
        self.seen: list[tuple[str, Any]] = []

    def note(self, stamp: int, topic: str, data: Any) -> None:
        if stamp != self.stamp:
            self.stamp, self.seen = stamp, []
        self.seen.append((topic, data))

    def already_yielded(self, stamp: int, topic: str, data: Any) -> bool:
        if self.stamp is None or stamp > self.stamp:
            return False
        if stamp < self.stamp:
            return True
        for i, (t, d) in enumerate(self.seen):
            if t == topic and bytes(d) == bytes(data):
                del self.seen[i]
                return True
        return False


# --------------------------------------------------------------------------------------------
# Fallback scan: MCAP
# --------------------------------------------------------------------------------------------

MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_HEADER, _OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 1, 2, 3, 4, 5, 6
_OP_DATA_END = 0x0F
_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_RECORD = struct.Struct("<BQ")
_MESSAGE = struct.Struct("<HIQQ")
_CHUNK = struct.Struct("<QQQI")


class _Cursor:
    """Little-endian reader over a bytes-like record body (raises IndexError when short)."""

    def __init__(self, buf: memoryview):
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise IndexError("record too short")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def string(self) -> str:
        return bytes(self.take(self.u32())).decode("utf-8", errors="replace")


def _records(buf: memoryview) -> tuple[list[tuple[int, memoryview]], bool]:
    """Complete records ``(opcode, body)`` of a record stream, and whether the stream ended
    exactly after the last one (False: cut off or a corrupt length)."""
    out, pos, end = [], 0, len(buf)
    while pos + 9 <= end:
        op, length = _RECORD.unpack(buf[pos:pos + 9])
        if not _valid_opcode(op) or pos + 9 + length > end:
            return out, False
        out.append((op, buf[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return out, pos == end


def _valid_opcode(op: int) -> bool:
    return 0x01 <= op <= 0x0F or op >= 0x80  # 0x80+ are private records


@dataclass
class _Unit:
    """A chunk (or a single un-chunked message) located by the first pass."""

    start: int
    end: int
    offset: int  # of the record body in the file
    length: int  # available body bytes (less than declared for a cut-off chunk)
    is_chunk: bool
    partial: bool = False


class _McapScan:
    """Record-by-record MCAP scan that survives a missing footer/summary or a cut-off file."""

    def __init__(self, path: Path, error: _Errors):
        self.path, self.error = path, error
        self.schemas: dict[int, tuple[str, str, str]] = {}  # id -> (name, encoding, text)
        self.channels: dict[int, tuple[str, int, str]] = {}  # id -> (topic, schema, encoding)
        self.units: list[_Unit] = []
        self.truncated = False

    # -- first pass ------------------------------------------------------------------------
    def _definition(self, op: int, body: memoryview) -> None:
        c = _Cursor(body)
        if op == _OP_SCHEMA:
            sid = c.u16()
            name, enc = c.string(), c.string()
            self.schemas[sid] = (name, enc, c.string())
        else:
            cid, sid = c.u16(), c.u16()
            self.channels[cid] = (c.string(), sid, c.string())

    def _inner_definitions(self, records: memoryview) -> None:
        for op, body in _records(records)[0]:
            if op in (_OP_SCHEMA, _OP_CHANNEL):
                self._definition(op, body)

    def index(self, f) -> bool:
        """First pass: definitions and the chunk/message layout. False if not an MCAP file."""
        size = f.seek(0, 2)
        f.seek(0)
        if f.read(8) != MCAP_MAGIC:
            self.error(f"{self.path.name}: not an MCAP file (bad magic)")
            self.truncated = True
            return False
        pos, ended = 8, False
        while True:
            if pos + 9 > size:
                break
            f.seek(pos)
            op, length = _RECORD.unpack(f.read(9))
            if not _valid_opcode(op):
                self.error(f"{self.path.name}: corrupt record (opcode {op:#x}) at byte {pos}; "
                           "the rest of the file is unreadable")
                self.truncated = True
                return True
            body = pos + 9
            available = min(length, size - body)
            if op in (_OP_DATA_END, _OP_FOOTER):
                ended = True
                break
            try:
                if op == _OP_CHUNK:
                    self._index_chunk(f, body, available, partial=available < length)
                elif op == _OP_MESSAGE and available == length and length >= _MESSAGE.size:
                    _, _, log_time, _ = _MESSAGE.unpack(f.read(_MESSAGE.size))
                    self.units.append(_Unit(log_time, log_time, body, length, False))
                elif op in (_OP_SCHEMA, _OP_CHANNEL) and available == length:
                    self._definition(op, memoryview(f.read(length)))
            except (IndexError, struct.error, ValueError) as exc:
                self.error(f"{self.path.name}: unreadable record {op:#x} at byte {pos}: {exc}")
                self.truncated = True
            if available < length:
                break
            pos = body + length
        if not ended:
            self.truncated = True
            self.error(f"{self.path.name}: MCAP file ends after {size} bytes without a data-end"
                       " record (cut short or recorder killed); reading what is there")
        return True

    def _chunk_records(self, f, body: int, available: int) -> tuple[memoryview, bool]:
        """Decompressed inner records of a chunk, and whether they are complete."""
        f.seek(body)
        c = _Cursor(memoryview(f.read(available)))
        c.u64(), c.u64()
        usize, crc = c.u64(), c.u32()
        compression = c.string()
        csize = c.u64()
        data = c.buf[c.pos:c.pos + csize]
        complete = len(data) == csize
        if compression == "":
            out = data
        elif compression == "zstd":
            if complete:
                out = zstd.decompress(data)
            else:
                out = zstd.ZstdDecompressor().decompress(data)
        elif compression == "lz4":
            from lz4.frame import LZ4FrameDecompressor
            out = LZ4FrameDecompressor().decompress(bytes(data))
        else:
            raise ValueError(f"unsupported chunk compression {compression!r}")
        if complete:
            if len(out) != usize:
                raise ValueError(f"chunk decompressed to {len(out)} bytes, expected {usize}")
            if crc and zlib.crc32(out) != crc:
                raise ValueError("chunk CRC mismatch (corrupt data)")
        return memoryview(out), complete

    def _index_chunk(self, f, body: int, available: int, partial: bool) -> None:
        if available < _CHUNK.size:
            return
        f.seek(body)
        start, end, _, _ = _CHUNK.unpack(f.read(_CHUNK.size))
        try:
            records, _ = self._chunk_records(f, body, available)
        except Exception as exc:  # noqa: BLE001
            self.error(f"{self.path.name}: chunk at byte {body - 9} unreadable ({exc}); "
                       "its messages are lost")
            self.truncated = True
            return
        self._inner_definitions(records)
        self.units.append(_Unit(start, end, body, available, True, partial))

    # -- second pass -----------------------------------------------------------------------
    def _unit_messages(self, f, unit: _Unit) -> list[tuple[int, int, int, bytes]]:
        if not unit.is_chunk:
            f.seek(unit.offset)
            buf = f.read(unit.length)
            cid, _, log_time, _ = _MESSAGE.unpack_from(buf)
            return [(log_time, unit.offset, cid, buf[_MESSAGE.size:])]
        records, complete = self._chunk_records(f, unit.offset, unit.length)
        parsed, clean = _records(records)
        if not clean and complete:
            self.error(f"{self.path.name}: corrupt record inside the chunk at byte "
                       f"{unit.offset - 9}; the rest of that chunk is lost")
            self.truncated = True
        out = []
        for op, body in parsed:
            if op == _OP_MESSAGE and len(body) >= _MESSAGE.size:
                cid, _, log_time, _ = _MESSAGE.unpack_from(body)
                out.append((log_time, unit.offset, cid, bytes(body[_MESSAGE.size:])))
        out.sort(key=lambda x: x[0])
        return out

    def messages(self, f) -> Iterator[tuple[int, int, bytes]]:
        """``(log_time, channel_id, data)`` in log-time order, loading chunks lazily."""
        units = sorted(self.units, key=lambda u: (u.start, u.offset))
        heap: list[tuple[int, int, int, bytes]] = []
        seq, i = 0, 0
        while i < len(units) or heap:
            while i < len(units) and (not heap or units[i].start <= heap[0][0]):
                unit = units[i]
                i += 1
                try:
                    for log_time, _, cid, data in self._unit_messages(f, unit):
                        heapq.heappush(heap, (log_time, seq, cid, data))
                        seq += 1
                except Exception as exc:  # noqa: BLE001
                    self.error(f"{self.path.name}: record at byte {unit.offset - 9} "
                               f"unreadable ({exc})")
                    self.truncated = True
            if heap:
                log_time, _, cid, data = heapq.heappop(heap)
                yield log_time, cid, data


def _scan_mcap(path: Path, topics: set[str] | None, error: _Errors,
               decoder: _Decoder, report: BagReadReport) -> Iterator[tuple[str, str, int, bytes]]:
    scan = _McapScan(path, error)
    with path.open("rb") as f:
        if not scan.index(f):
            report.truncated = True
            return
        report.truncated |= scan.truncated
        definitions = {}
        for name, enc, text in scan.schemas.values():
            definitions.setdefault(name, (enc, text))
        decoder.set_definitions(definitions)
        wanted: dict[int, tuple[str, str]] = {}
        for cid, (topic, sid, encoding) in scan.channels.items():
            if topics is not None and topic not in topics:
                continue
            schema = scan.schemas.get(sid)
            if schema is None or encoding != "cdr":
                error(f"{path.name}: channel {topic} has no schema or is not CDR ({encoding!r}); "
                      "skipped", key=("channel", cid))
                continue
            wanted[cid] = (topic, schema[0])
        unknown_channels = set()
        for log_time, cid, data in scan.messages(f):
            if cid in wanted:
                topic, msgtype = wanted[cid]
                yield topic, msgtype, log_time, data
            elif cid not in scan.channels and cid not in unknown_channels:
                unknown_channels.add(cid)
                error(f"{path.name}: messages on undefined channel {cid} skipped")
        report.truncated |= scan.truncated


# --------------------------------------------------------------------------------------------
# Fallback scan: SQLite3
# --------------------------------------------------------------------------------------------

def _probe_next_row(con: sqlite3.Connection, after: int) -> int | None:
    """First readable message id beyond a corrupt region following ``after`` (None: none)."""
    step = 1
    for _ in range(48):
        try:
            row = con.execute("SELECT id FROM messages WHERE id >= ? ORDER BY id LIMIT 1",
                              (after + step,)).fetchone()
        except sqlite3.DatabaseError:
            step *= 2
            continue
        return None if row is None else int(row[0])
    return None


def _scan_sqlite(path: Path, topics: set[str] | None, error: _Errors,
                 decoder: _Decoder, report: BagReadReport) -> Iterator[tuple[str, str, int, bytes]]:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        # Tolerate a file shorter than its header says (cut-off copy): SQLite otherwise refuses
        # the whole database. Read-only, so nothing is ever written.
        con.execute("PRAGMA writable_schema=ON")
    except sqlite3.Error as exc:
        error(f"{path.name}: cannot open sqlite3 database: {exc}")
        report.truncated = True
        return
    try:
        try:
            topic_rows = con.execute("SELECT id, name, type FROM topics").fetchall()
        except sqlite3.DatabaseError as exc:
            error(f"{path.name}: topics table unreadable ({exc}); nothing can be recovered")
            report.truncated = True
            return
        definitions = {}
        try:
            for name, enc, text in con.execute(
                    "SELECT topic_type, encoding, encoded_message_definition "
                    "FROM message_definitions ORDER BY id"):
                definitions.setdefault(name, (enc, text))
        except sqlite3.DatabaseError:
            pass  # schema < 4 or unreadable: built-in definitions only
        decoder.set_definitions(definitions)
        wanted = {tid: (name, msgtype) for tid, name, msgtype in topic_rows
                  if topics is None or name in topics}
        # First pass: (timestamp, id, topic) of every readable row, in id order, hopping over
        # corrupt b-tree pages.
        index: list[tuple[int, int, int]] = []
        last, failed_at = 0, None
        while True:
            try:
                for mid, tid, stamp in con.execute(
                        "SELECT id, topic_id, timestamp FROM messages WHERE id > ? ORDER BY id",
                        (last,)):
                    last = mid
                    if tid in wanted:
                        index.append((stamp, mid, tid))
                break
            except sqlite3.DatabaseError as exc:
                report.truncated = True
                # No progress since the previous failure: hop over the row that fails.
                after = last + 1 if failed_at == last else last
                failed_at = last
                nxt = _probe_next_row(con, after)
                error(f"{path.name}: messages table corrupt after row {last} ({exc}); "
                      + ("no readable rows after it" if nxt is None
                         else f"resuming at row {nxt}"))
                if nxt is None:
                    break
                last = nxt - 1
        index.sort()
        for stamp, mid, tid in index:
            try:
                row = con.execute("SELECT data FROM messages WHERE id = ?", (mid,)).fetchone()
            except sqlite3.DatabaseError as exc:
                report.truncated = True
                report.messages_skipped += 1
                error(f"{path.name}: row {mid} unreadable ({exc})", key="sqlite-row")
                continue
            if row is None:
                continue
            topic, msgtype = wanted[tid]
            yield topic, msgtype, stamp, row[0]
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------

def _storage_files(path: Path, error: _Errors) -> list[Path]:
    if path.is_file():
        return [path]
    meta = path / "metadata.yaml"
    if meta.exists():
        try:
            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            files = [path / Path(p).name for p in info["relative_file_paths"]]
            if all(p.exists() for p in files):
                return files
            error(f"metadata.yaml lists missing files: {[p.name for p in files if not p.exists()]}")
        except Exception as exc:  # noqa: BLE001
            error(f"metadata.yaml unreadable ({exc})")
    else:
        error("no metadata.yaml (recording not closed?); reading the storage files directly")
    return sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))


class BagReader(Iterator[BagMessage]):
    """Iterator over a bag's messages; see :func:`read_bag`. ``report`` is final once the
    iteration is exhausted (or :meth:`close` was called)."""

    def __init__(self, path: str | Path, topics: Iterable[str] | None = None, raw: bool = False):
        self.path = Path(path)
        self.topics = None if topics is None else set(topics)
        self.report = BagReadReport(path=str(self.path))
        self._error = _Errors(self.report)
        self._decoder = _Decoder(self.report, self._error, raw)
        self._gen = self._generate()

    @property
    def errors(self) -> list[str]:
        return self.report.errors

    @property
    def truncated(self) -> bool:
        return self.report.truncated

    def __iter__(self) -> BagReader:
        return self

    def __next__(self) -> BagMessage:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def _emit(self, bm: BagMessage | None) -> BagMessage | None:
        if bm is not None:
            self.report.messages_read += 1
            self.report.per_topic[bm.topic] = self.report.per_topic.get(bm.topic, 0) + 1
        return bm

    def _generate(self) -> Iterator[BagMessage]:
        if not self.path.exists():
            self._error(f"{self.path} does not exist")
            return
        resume = _Resume()
        done = yield from self._read_with_rosbags(resume)
        if done:
            return
        self.report.recovered = True
        for storage in _storage_files(self.path, self._error):
            if storage.suffix == ".mcap":
                scan = _scan_mcap
            elif storage.suffix == ".db3":
                scan = _scan_sqlite
            else:
                self._error(f"{storage.name}: unsupported storage file (compressed?)")
                continue
            try:
                for topic, msgtype, stamp, data in scan(storage, self.topics, self._error,
                                                        self._decoder, self.report):
                    if resume.already_yielded(stamp, topic, data):
                        continue
                    bm = self._emit(self._decoder.decode(topic, msgtype, stamp, data))
                    if bm is not None:
                        yield bm
            except Exception as exc:  # noqa: BLE001 - last line of defence: never raise
                self.report.truncated = True
                self._error(f"{storage.name}: scan aborted: {exc!r}")

    def _read_with_rosbags(self, resume: _Resume):
        """Normal path. Returns True when the whole bag was read this way."""
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as exc:  # noqa: BLE001
            self._error(f"rosbags cannot open the bag ({exc}); scanning the storage directly")
            return False
        try:
            conns = [c for c in reader.connections
                     if self.topics is None or c.topic in self.topics]
            self._decoder.set_definitions({
                c.msgtype: ("ros2idl" if c.msgdef.format.name == "IDL" else "ros2msg",
                            c.msgdef.data)
                for c in reader.connections if c.msgdef.data})
            if not conns:
                return True
            try:
                for conn, stamp, data in reader.messages(connections=conns):
                    resume.note(stamp, conn.topic, data)
                    bm = self._emit(self._decoder.decode(conn.topic, conn.msgtype, stamp, data))
                    if bm is not None:
                        yield bm
            except Exception as exc:  # noqa: BLE001
                self.report.truncated = True
                self._error(f"reading stopped at log time {resume.stamp} ({exc!r}); "
                            "scanning the storage for the rest")
                return False
            return True
        finally:
            try:
                reader.close()
            except Exception:  # noqa: BLE001
                pass


def read_bag(path: str | Path, topics: Iterable[str] | None = None,
             raw: bool = False) -> BagReader:
    """Messages of a rosbag2 bag (directory, or a single .mcap / .db3 file) in log-time order.

    ``topics`` restricts the topics read; ``raw=True`` yields the CDR bytes instead of decoded
    messages. Never raises for damaged data: see ``reader.report`` / ``reader.errors``.
    """
    return BagReader(path, topics=topics, raw=raw)


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

def _storage_name(path: Path) -> str:
    files = [path] if path.is_file() else list(path.glob("*.mcap")) + list(path.glob("*.db3"))
    suffixes = {p.suffix for p in files}
    if len(suffixes) != 1:
        return "unknown"
    return {".mcap": "mcap", ".db3": "sqlite3"}.get(suffixes.pop(), "unknown")


def _summary(path: Path, storage: str, types: dict[str, str], counts: dict[str, int],
             latched: list[str], start: int | None, end: int | None, errors: list[str],
             truncated: bool) -> dict[str, Any]:
    return {
        "path": str(path), "storage": storage, "topics": sorted(types), "types": types,
        "counts": counts, "latched": sorted(latched), "message_count": sum(counts.values()),
        "start_ns": start, "end_ns": end,
        "duration_s": 0.0 if start is None or end is None else (end - start) / 1e9,
        "errors": errors, "truncated": truncated}


def bag_summary(path: str | Path) -> dict[str, Any]:
    """What a bag holds, as a JSON-able dict (never raises for damaged bags)::

        {"path", "storage": "mcap"|"sqlite3"|"unknown", "topics": [names],
         "types": {topic: msgtype}, "counts": {topic: n}, "latched": [transient_local topics],
         "message_count", "start_ns", "end_ns" (log times of the first/last message, None when
         empty), "duration_s", "errors": [..], "truncated": bool}

    Comes from the bag's index when it is intact, else from scanning what is readable.
    """
    path = Path(path)
    storage = _storage_name(path) if path.exists() else "unknown"
    try:
        with Reader(path) as reader:
            types, counts, latched = {}, {}, []
            for name, info in reader.topics.items():
                types[name] = info.msgtype or ""
                counts[name] = info.msgcount
                if any(q.durability == QosDurability.TRANSIENT_LOCAL
                       for c in info.connections if isinstance(c.ext, ConnectionExtRosbag2)
                       for q in c.ext.offered_qos_profiles):
                    latched.append(name)
            n = reader.message_count
            return _summary(path, storage, types, counts, latched,
                            reader.start_time if n else None, reader.end_time - 1 if n else None,
                            [], False)
    except Exception:  # noqa: BLE001 - fall back to a scan
        pass
    reader = read_bag(path, raw=True)
    types, counts = {}, {}
    start = end = None
    for bm in reader:
        types.setdefault(bm.topic, bm.msgtype)
        counts[bm.topic] = counts.get(bm.topic, 0) + 1
        start = bm.stamp_ns if start is None else min(start, bm.stamp_ns)
        end = bm.stamp_ns if end is None else max(end, bm.stamp_ns)
    return _summary(path, storage, types, counts, [], start, end, list(reader.report.errors),
                    reader.report.truncated)
