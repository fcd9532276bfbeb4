"""Reader of the LightGCN text format: one line per user, ``uid item item ...``.

Ids are separated by any run of spaces and tabs; lines end in ``\\n`` or ``\\r\\n``. Parsing is
vectorized over the file's bytes (Gowalla's 810k interactions parse in well under a second) and
strict: every problem is reported with the file and the 1-based line number.

The id space is ``0..max id`` of users and of items, taken over train and test, so it must be
mostly used: :func:`check_id_space` refuses it when more than half of the user ids or of the item
ids have no interaction (:data:`MAX_UNUSED_SHARE`); ids must also be below :data:`MAX_IDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cerp_core.data.errors import DataFormatError, DatasetNotFoundError

_DIGIT_LO, _DIGIT_HI = ord("0"), ord("9")
_SPACE, _TAB, _NEWLINE, _CR, _MINUS = ord(" "), ord("\t"), ord("\n"), ord("\r"), ord("-")
_SEPARATORS = (_SPACE, _TAB, _NEWLINE, _CR)
_PRINTABLE_LO, _PRINTABLE_HI = ord("!"), ord("~")
_MAX_DIGITS = 18  # every id of at most 18 digits fits in int64
_SNIPPET = 24  # bytes shown at most either side of a bad byte

MAX_IDS = 2**31 - 1
"""Ids must be below this (int32 indices); such an id space would not fit in memory anyway."""
MAX_UNUSED_SHARE = 0.5
"""Largest share of the user ids (or of the item ids) ``0..max`` without any interaction."""
REMAP_HINT = (
    "load the (user, item) pairs as a pandas DataFrame through load_dataset(frame) / "
    "from_dataframe(frame), which remaps ids to 0..n-1 (and draws its own train/test split)"
)


@dataclass(frozen=True)
class UserItemFile:
    """The interactions of one file, with the 1-based source line of each, and the uid of
    every line (a user line may list no item; line ``i + 1`` holds ``uids[i]``)."""

    path: Path
    users: np.ndarray
    items: np.ndarray
    lines: np.ndarray
    uids: np.ndarray

    def largest(self, kind: str) -> tuple[int, int]:
        """The largest ``"user"`` (of any line) or ``"item"`` id, and its 1-based line."""
        ids = self.uids if kind == "user" else self.items
        at = int(np.argmax(ids))
        return int(ids[at]), at + 1 if kind == "user" else int(self.lines[at])


def require_file(path: Path) -> None:
    """Raise unless ``path`` is a file: missing, or a directory where a file belongs."""
    if path.is_dir():
        raise DataFormatError(path, None, "is a directory, not a file; expected LightGCN text")
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found; expected LightGCN train.txt/test.txt")


def _line_of(data: np.ndarray, position: int) -> int:
    return int(np.count_nonzero(data[:position] == _NEWLINE)) + 1


def _token_at(data: np.ndarray, position: int) -> str:
    """The token around ``position``, at most ``_SNIPPET`` bytes either side, ASCII-escaped."""
    start, end = position, position
    while start > 0 and position - start < _SNIPPET and data[start - 1] not in _SEPARATORS:
        start -= 1
    while end < len(data) and end - position < _SNIPPET and data[end] not in _SEPARATORS:
        end += 1
    cut_before = start > 0 and data[start - 1] not in _SEPARATORS
    cut_after = end < len(data) and data[end] not in _SEPARATORS
    text = ascii(bytes(data[start:end]).decode("latin-1"))
    return "..." * cut_before + text + "..." * cut_after


def _bad_byte(path: Path, data: np.ndarray, position: int) -> DataFormatError:
    """The error for the first byte that is neither a digit nor a separator."""
    byte, token = int(data[position]), _token_at(data, position)
    if _PRINTABLE_LO <= byte <= _PRINTABLE_HI:
        what = "negative id" if byte == _MINUS else "not a non-negative integer"
        message = f"token {token} is {what}; expected 'uid item item ...'"
    else:
        message = (
            f"byte offset {position} holds {byte:#04x} (near {token}), which is not text: a "
            "binary, compressed or non-ASCII file? expected 'uid item item ...' lines"
        )
    return DataFormatError(path, _line_of(data, position), message)


def read_user_item_file(path: str | Path) -> UserItemFile:
    """Parse one LightGCN-format file; raise :class:`DataFormatError` on any bad input."""
    path = Path(path)
    require_file(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataFormatError(path, None, "file is empty; expected lines 'uid item item ...'")
    if not raw.endswith(b"\n"):
        raw += b"\n"
    data = np.frombuffer(raw, dtype=np.uint8)
    is_digit = (data >= _DIGIT_LO) & (data <= _DIGIT_HI)
    is_newline = data == _NEWLINE
    ok = is_digit | is_newline | (data == _SPACE) | (data == _TAB)
    ok[:-1] |= (data[:-1] == _CR) & is_newline[1:]  # a CR only as part of CRLF
    bad = np.flatnonzero(~ok)
    if len(bad):
        raise _bad_byte(path, data, int(bad[0]))

    line_of_byte = np.cumsum(is_newline) - is_newline  # 0-based line per byte
    starts = np.flatnonzero(is_digit & ~np.concatenate(([False], is_digit[:-1])))
    num_lines = int(line_of_byte[-1]) + 1
    tokens_per_line = np.bincount(line_of_byte[starts], minlength=num_lines)
    blank = np.flatnonzero(tokens_per_line == 0)
    if len(blank):
        raise DataFormatError(path, int(blank[0]) + 1, "blank line; expected 'uid item item ...'")

    ends = np.flatnonzero(is_digit & ~np.concatenate((is_digit[1:], [False])))
    too_long = np.flatnonzero(ends - starts + 1 > _MAX_DIGITS)
    if len(too_long):
        pos = int(starts[too_long[0]])
        raise DataFormatError(
            path,
            _line_of(data, pos),
            f"id {_token_at(data, pos)} has more than {_MAX_DIGITS} digits; ids must fit int64",
        )
    values = np.array(raw.split(), dtype=np.int64)
    token_line = line_of_byte[starts]
    top = int(np.argmax(values))
    if values[top] >= MAX_IDS:
        raise DataFormatError(
            path,
            int(token_line[top]) + 1,
            f"id {values[top]} is too large: ids must be below {MAX_IDS:,}; {REMAP_HINT}",
        )
    is_uid = np.concatenate(([True], token_line[1:] != token_line[:-1]))
    uids = values[is_uid]
    repeated_uid = np.flatnonzero(np.diff(np.sort(uids)) == 0)
    if len(repeated_uid):
        uid = np.sort(uids)[repeated_uid[0]]
        second = np.flatnonzero(uids == uid)[1]
        raise DataFormatError(path, int(second) + 1, f"user {uid} has a second line")

    users = np.repeat(uids, tokens_per_line - 1)
    items = values[~is_uid]
    if len(items) == 0:
        raise DataFormatError(path, None, "no interactions: every line holds only a uid")
    lines = token_line[~is_uid] + 1
    check_unique_pairs(path, users, items, lines)
    return UserItemFile(path, users, items, lines, uids)


def check_unique_pairs(path: Path, users: np.ndarray, items: np.ndarray, lines: np.ndarray) -> None:
    """Raise on the first (user, item) pair listed twice (ids below :data:`MAX_IDS`)."""
    if len(users) == 0:
        return
    keys = users * (int(items.max()) + 1) + items
    order = np.argsort(keys, kind="stable")
    dup = np.flatnonzero(np.diff(keys[order]) == 0)
    if len(dup):
        first = order[dup + 1].min()
        raise DataFormatError(
            path, int(lines[first]), f"user {users[first]} lists item {items[first]} twice"
        )


def _count_distinct(ids: np.ndarray, size: int) -> int:
    """Distinct values of ``ids`` (all in ``0..size-1``), in memory linear in ``len(ids)``."""
    if size > 2 * len(ids):  # sure to be mostly unused: do not allocate ``size``
        return len(np.unique(ids))
    return int(np.count_nonzero(np.bincount(ids, minlength=size)))


def check_id_space(train: UserItemFile, test: UserItemFile) -> None:
    """Refuse user or item ids ``0..max`` of which more than half have no interaction.

    The error names the file and line of the largest id, since a stray id is the usual cause.
    """
    for kind in ("user", "item"):
        (top, line), path = max((f.largest(kind), f.path) for f in (train, test))
        used = np.concatenate([f.users if kind == "user" else f.items for f in (train, test)])
        size = top + 1
        unused = size - _count_distinct(used, size)
        if unused > MAX_UNUSED_SHARE * size:
            raise DataFormatError(
                path,
                line,
                f"{kind} id {top} makes {size:,} {kind} ids, of which {unused:,} "
                f"({unused / size:.1%}) have no interaction in train or test (at most "
                f"{MAX_UNUSED_SHARE:.0%} may); {REMAP_HINT}",
            )


def check_disjoint(train: UserItemFile, test: UserItemFile) -> None:
    """Raise if a (user, item) pair of the test file is also in the train file."""
    width = int(max(train.items.max(initial=0), test.items.max(initial=0))) + 1
    test_keys, train_keys = test.users * width + test.items, train.users * width + train.items
    # each file's pairs are unique (checked when read); without this, isin is 25x slower
    overlap = np.isin(test_keys, train_keys, assume_unique=True)
    if overlap.any():
        first = int(np.flatnonzero(overlap)[0])
        raise DataFormatError(
            test.path,
            int(test.lines[first]),
            f"user {test.users[first]} item {test.items[first]} is also in {train.path}",
        )


def check_negatives_exist(train: UserItemFile, test: UserItemFile) -> None:
    """Raise if a user of the train file holds every item: BPR cannot draw a negative for it."""
    num_items = int(max(train.items.max(initial=0), test.items.max(initial=0))) + 1
    counts = np.bincount(train.users, minlength=1)
    full = np.flatnonzero(counts >= num_items)
    if len(full):
        user = int(full[0])
        first = int(np.flatnonzero(train.users == user)[0])
        raise DataFormatError(
            train.path,
            int(train.lines[first]),
            f"user {user} has interacted with every one of the {num_items:,} items, so BPR "
            "cannot draw a negative for it; remove the user or add items",
        )
