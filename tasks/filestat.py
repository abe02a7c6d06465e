"""What a file's stat says about its bytes: a re-sync's quick check, as git's index and rsync have.

A file whose size, mtime, ctime and inode are what they were when a sync read it holds the bytes
that sync read, so a re-sync need not read and hash it again to know it is unchanged (100,000
files: a stat each, against an open, a read and a sha256 each). The ctime is what makes this
exact: every write moves it, and no user-space call sets it back (`touch -r` and restoring an old
mtime move it too), so a file edited and given back its mtime is still read again.

One case remains, a write in the same tick of the file system's clock as the change before it:
size and times could be equal while the bytes differ. A stat taken within SETTLED_NS of the file's
last change is therefore not kept (git calls such files "racily clean"); a file like that is
hashed, as every file is on the way to cutover. What is kept is one 64-bit key per file, compared
for equality only: 36 bytes of Python a file, where the four numbers took about 170.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct

# How long after a file's last change its stat says enough: well over a clock tick (4-10 ms on
# Linux) and FAT's two-second timestamps, and clocks of a network file system a little apart.
SETTLED_NS = 2_000_000_000
_LAYOUT = struct.Struct("<4Q")  # size, mtime ns, ctime ns, inode, each cut to 64 bits
_BITS = (1 << 64) - 1  # a time before 1970 or after 2262 in ns, or an inode past 2**63, still packs


def _fields(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def stat_key(st: os.stat_result) -> int:
    """The stat's size, mtime, ctime and inode as one signed 64-bit key (a bigint column)."""
    packed = _LAYOUT.pack(*(v & _BITS for v in _fields(st)))
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "big", signed=True)


def read_key(before: os.stat_result, taken_ns: int, after: os.stat_result, size: int) -> int | None:
    """The key of a file whose `size` bytes were read between two stats of it, if they say it held
    still meanwhile and had settled before (the bytes read are then the ones its stat vouches for)."""
    if before.st_size != size or _fields(after) != _fields(before) or not settled(before, taken_ns):
        return None
    return stat_key(before)


def settled(st: os.stat_result, taken_ns: int) -> bool:
    """Whether a regular file's stat, taken at taken_ns (or after), may vouch for its bytes: its
    last change is long enough before for a later write to show in the stat."""
    return stat.S_ISREG(st.st_mode) and st.st_ctime_ns < taken_ns - SETTLED_NS
