"""Which Phase 1 files a run migrates, and whose each one is.

Phase 1 was a CLI: every user kept a `tasks.json` of their own. A run takes one file, a directory
(every `*.json` under it), a glob (`uploads/**/tasks.json`) or a manifest (CSV `path,email`). Each
file is its own legacy source, named after the run's source name and the file's path relative to
where the run looked (`phase1:alice/tasks.json`), so keys stay deterministic per file and two users'
task 1 are two tasks. A single file keeps the run's source name alone, as before.

Owners: the manifest's email, else the part of the path `--owner-from-path` names
(`uploads/{email}/tasks.json`), else the run's default user (and, inside a file, a record's own
owner wins over all of these, as it always did).
"""

from __future__ import annotations

import csv
import glob
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import InputError
from tasks.transform import normalize_email

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
GLOB_CHARS = re.compile(r"[*?\[]")


class SourcesError(InputError):
    """The files of a run cannot be told: a bad manifest, pattern or source."""


@dataclass(frozen=True, slots=True)  # slots: a run may hold 100,000 of them
class FileSource:
    path: str
    legacy_source: str  # the name its rows carry in tasks.legacy_source (and their uuid5 keys)
    owner: str | None  # the default owner of its records (None: the run's default user)


def resolve(
    source: str | None,
    *,
    manifest: str | None = None,
    owner_from_path: str | None = None,
    source_name: str = "phase1",
) -> list[FileSource]:
    """The run's files in a stable order (by legacy source), each with its legacy source and owner."""
    if manifest:
        return _manifest(Path(manifest), source_name)
    if not source:
        raise SourcesError("no source: give --source FILE, DIR or GLOB, or --manifest CSV")
    pattern = _owner_pattern(owner_from_path) if owner_from_path else None
    path = Path(source)
    if not GLOB_CHARS.search(source) and not path.is_dir():
        return [FileSource(source, source_name, _owner_of(source, pattern))]
    if path.is_dir():
        base, matches = str(path), _json_files(str(path))
    else:
        base = _static_prefix(source)
        linked = _Links()  # `**` follows symlinked folders: a link back up would give each file many times
        matches = [p for p in glob.glob(source, recursive=True) if os.path.isfile(p) and not linked.under(p, base)]
    if not matches:
        raise SourcesError(f"{source}: no files match")
    relative = _Relative(base)
    files = [FileSource(p, f"{source_name}:{relative(p)}", _owner_of(p, pattern)) for p in matches]
    return sorted(files, key=lambda f: f.legacy_source)


def _json_files(top: str) -> list[str]:
    """Every *.json file under top, symlinked directories not followed (as Path.rglob). Each
    directory is read once and its entries' types come with it, without a stat per file: rglob
    and is_file() cost seconds more at 100,000 files. A directory that cannot be read is an error,
    not files silently left out."""
    found, folders = [], [top]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.name.endswith(".json") and entry.is_file():
                        found.append(entry.path)
        except OSError as exc:
            raise SourcesError(f"{folder}: cannot be read ({exc.strerror}); no file was migrated") from None
    return found


class _Links:
    """Whether a path reaches its file through a symlinked folder below base (one lstat a folder)."""

    def __init__(self) -> None:
        self.seen: dict[str, bool] = {}

    def under(self, path: str, base: str) -> bool:
        folder, top = os.path.dirname(path), os.path.normpath(base)
        while folder and os.path.normpath(folder) != top:
            if folder not in self.seen:
                self.seen[folder] = os.path.islink(folder)
            if self.seen[folder]:
                return True
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        return False


class _Relative:
    """A path relative to base, with forward slashes (what a legacy source is named by).

    os.path.relpath makes both paths absolute on every call (35 us each, 3.5 s at 100,000 files);
    a path found under base as base + "/" + a clean remainder is that remainder, the same string
    relpath gives. Anything else (".", "..", "//" in it) goes through relpath."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.prefix = base.rstrip("/") + "/"

    def __call__(self, path: str) -> str:
        rest = path[len(self.prefix) :]
        if path.startswith(self.prefix) and rest and "//" not in "/" + rest and "/." not in "/" + rest:
            return rest
        return Path(os.path.relpath(path, self.base)).as_posix()


def shard(files: list[FileSource], index: int, shards: int) -> list[FileSource]:
    """The files of one of `shards` shards: by a stable hash of the legacy source, so shards never
    overlap and a file stays in its shard from run to run (a crashed shard's re-run resumes it)."""
    if not 0 <= index < shards:
        raise SourcesError(f"shard {index} of {shards}: expected 0 <= shard < shards")
    return [f for f in files if zlib.crc32(f.legacy_source.encode("utf-8", "surrogatepass")) % shards == index]


def _static_prefix(pattern: str) -> str:
    """The directory part of a glob before its first wildcard (what legacy sources are relative to)."""
    parts = Path(pattern).parts
    static = []
    for part in parts:
        if GLOB_CHARS.search(part):
            break
        static.append(part)
    return os.path.join(*static) if static else "."


def _owner_pattern(template: str) -> re.Pattern[str]:
    """`uploads/{email}/tasks.json` -> a regex whose `email` group takes that part of a path (a
    template may also use `*` for any one path part)."""
    if template.count("{email}") != 1:
        raise SourcesError(f"--owner-from-path {template!r}: expected exactly one {{email}}, e.g. uploads/{{email}}/tasks.json")
    head, tail = template.split("{email}")
    regex = "".join(re.escape(p) if p != "*" else "[^/]+" for p in re.split(r"(\*)", head))
    regex += "(?P<email>[^/]+)" + "".join(re.escape(p) if p != "*" else "[^/]+" for p in re.split(r"(\*)", tail))
    return re.compile(f"(?:^|/){regex}$")


def _owner_of(path: str, pattern: re.Pattern[str] | None) -> str | None:
    if pattern is None:
        return None
    match = pattern.search(Path(path).as_posix())
    if match is None:
        raise SourcesError(f"{path}: does not match --owner-from-path (no email part in it)")
    return _email(match.group("email"), path)


def _email(text: str, where: str) -> str:
    email = normalize_email(text)
    if not EMAIL.match(email):
        raise SourcesError(f"{where}: {text!r} is not an email address")
    return email


def _manifest(path: Path, source_name: str) -> list[FileSource]:
    """A CSV with a header naming `path` and `email`; paths relative to the manifest's folder."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {c.strip() for c in reader.fieldnames or []}
            if not {"path", "email"} <= fields:
                raise SourcesError(f"{path}: a manifest needs a header with path and email columns")
            files: list[FileSource] = []
            seen: set[str] = set()
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                if not row.get("path"):
                    raise SourcesError(f"{path}: line {line}: path is empty")
                name = Path(row["path"]).as_posix()
                if name in seen:
                    raise SourcesError(f"{path}: line {line}: {name} is listed twice")
                seen.add(name)
                file = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
                files.append(FileSource(str(file), f"{source_name}:{name}", _email(row["email"], f"{path}: line {line}")))
    except FileNotFoundError:
        raise SourcesError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise SourcesError(f"{path}: not UTF-8") from None
    except csv.Error as exc:
        raise SourcesError(f"{path}: not a CSV file ({exc})") from None
    if not files:
        raise SourcesError(f"{path}: the manifest lists no files")
    return sorted(files, key=lambda f: f.legacy_source)
