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
import posixpath
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks.conversions import normalize_email
from tasks.errors import InputError

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
GLOB_CHARS = re.compile(r"[*?\[]")


class SourcesError(InputError):
    """The files of a run cannot be told: a bad manifest, pattern or source."""


@dataclass(frozen=True, slots=True)  # slots: a run may hold 100,000 of them
class FileSource:
    path: str
    legacy_source: str  # the name its rows carry in tasks.legacy_source (and their uuid5 keys)
    owner: str | None  # the default owner of its records (None: the run's default user)
    error: str | None = None  # why it is refused before it is read (no owner can be told), one line


def resolve(
    source: str | None,
    *,
    manifest: str | None = None,
    owner_from_path: str | None = None,
    source_name: str = "phase1",
) -> list[FileSource]:
    """The run's files in a stable order (by legacy source), each with its legacy source and owner."""
    if manifest:
        if owner_from_path:
            raise SourcesError("--owner-from-path is for --source: a manifest names each file's owner")
        return _manifest(Path(manifest), source_name)
    if not source:
        raise SourcesError("no source: give --source FILE, DIR or GLOB, or --manifest CSV")
    owners = OwnerPattern(owner_from_path) if owner_from_path else None
    path = Path(source)
    if path.is_dir():
        base, matches, links = str(path), *_json_files(str(path))
    elif not GLOB_CHARS.search(source) or os.path.lexists(source):  # a file named `tasks[1].json` is that file
        if owners is None:
            return [FileSource(source, source_name, None)]
        # one user's file: named as the same file is in a run of the whole tree, so that a run of
        # it alone and one of every file give the same rows (and two users' files never share one)
        owner, name, error = owners.of(source)
        if error is not None:
            raise SourcesError(error)
        return [FileSource(source, f"{source_name}:{name}", owner)]
    else:
        base = _static_prefix(source)
        matches, links = _globbed(source, base)
    if not matches and not links:
        raise SourcesError(f"{source}: no files match")
    relative = _Relative(base)
    files = [_tree_file(p, relative(p), source_name, owners) for p in matches]
    files += [FileSource(p, f"{source_name}:{relative(p)}", None, f"{p}: {LINKED}") for p in links]
    return sorted(files, key=lambda f: f.legacy_source)


LINKED = "a symlinked folder, not followed (a link may lead back up the tree); list the files behind it in a --manifest"


def _tree_file(path: str, name: str, source_name: str, owners: OwnerPattern | None) -> FileSource:
    """A file of a directory or glob, named by its place below where the run looked, with its owner
    (or why it has none: it is refused alone). A run given one user's folder looks from inside it:
    its file is named as a run of the whole tree names it, from the `{email}` folder."""
    if owners is None:
        return FileSource(path, f"{source_name}:{name}", None)
    owner, in_tree, error = owners.of(path)
    if in_tree.endswith("/" + name):
        name = in_tree
    return FileSource(path, f"{source_name}:{name}", owner, error)


def _globbed(pattern: str, base: str) -> tuple[list[str], list[str]]:
    """The paths a glob matches that are not folders (a FIFO or a broken link among them is refused
    by its pre-check, with the reason), and the symlinked folders below its static part that some
    of its matches were reached through: `**` follows them, and a link back up would give each file
    many times, so they are named instead (base: the pattern's static part). A pattern that matches nothing with `[` in it is tried
    once more with its brackets as written (`Backup [2024]/*/tasks.json`)."""
    found = glob.glob(pattern, recursive=True)
    if not found and "[" in pattern:
        found = glob.glob(pattern.replace("[", "[[]"), recursive=True)
    linked = _Links(base)
    matches, links = [], set()
    for p in found:
        link = linked.under(p)
        if link is not None:
            links.add(link)
        elif not os.path.isdir(p):
            matches.append(p)
    return matches, sorted(links)


def _json_files(top: str) -> tuple[list[str], list[str]]:
    """Every *.json file under top (`.JSON` too, as a Windows upload names it), and the symlinked
    folders below it, which are not followed (as Path.rglob) but named, so that no file behind one
    is left out without a word. A FIFO or a broken link named *.json is a file the pre-check
    refuses with the reason. Each directory is read once and its entries' types come with it,
    without a stat per file: rglob and is_file() cost seconds more at 100,000 files. A directory
    that cannot be read is an error, not files silently left out."""
    found, links, folders = [], [], [top]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.is_dir():
                        links.append(entry.path)
                    elif entry.name[-5:].lower() == ".json":
                        found.append(entry.path)
        except OSError as exc:
            raise SourcesError(f"{folder}: cannot be read ({exc.strerror}); no file was migrated") from None
    return found, links


class _Links:
    """The topmost symlinked folder below base a path reaches its file through (one lstat a folder)."""

    def __init__(self, base: str) -> None:
        self.top = os.path.normpath(base)
        self.seen: dict[str, bool] = {}

    def under(self, path: str) -> str | None:
        folder, link = os.path.dirname(path), None
        while folder and os.path.normpath(folder) != self.top:
            if folder not in self.seen:
                self.seen[folder] = os.path.islink(folder)
            if self.seen[folder]:
                link = folder
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        return link


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


def absolute(paths: Iterable[str]) -> Iterator[str]:
    """The paths made absolute and normal, one by one, so that a file is one name however a run
    was told it (what an earlier sync read is matched by it: tasks/runs.py claimed_before). A path
    already absolute and clean is taken as it is: os.path.abspath asks for the working folder each
    time."""
    cwd = os.getcwd()
    for p in paths:
        yield p if p.startswith("/") and "/." not in p and "//" not in p else posixpath.normpath(posixpath.join(cwd, p))


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


class OwnerPattern:
    """`--owner-from-path uploads/{email}/tasks.json`: the owner a file's path names, and the file's
    name in the tree (from the path part the first `{email}` or `*` is in, as a run of the whole
    tree names it: `alice@x.com/tasks.json`). The template may use `*` for any one path part; it is
    matched at a folder boundary, against the path as found (a relative template, `./` or not) or
    made absolute (an absolute template)."""

    def __init__(self, template: str) -> None:
        if template.count("{email}") != 1:
            raise SourcesError(
                f"--owner-from-path {template!r}: expected exactly one {{email}}, e.g. uploads/{{email}}/tasks.json"
            )
        self.template = template
        self.absolute = os.path.isabs(template)
        clean = posixpath.normpath(Path(template).as_posix())
        first = min(i for i in (clean.find("{email}"), clean.find("*")) if i >= 0)
        head = clean[: clean.rfind("/", 0, first) + 1]
        parts = re.split(r"(\{email\}|\*)", clean[len(head) :])
        rest = "".join({"{email}": "(?P<email>[^/]+)", "*": "[^/]+"}.get(p, re.escape(p)) for p in parts)
        self.regex = re.compile(f"(?:^|/){re.escape(head)}(?P<name>{rest})$")

    def of(self, path: str) -> tuple[str | None, str, str | None]:
        """(owner, name in the tree, None), or (None, "", why not: one line)."""
        found = os.path.abspath(path) if self.absolute else os.path.normpath(path)
        match = self.regex.search(Path(found).as_posix())
        if match is None:
            return None, "", f"{path}: does not match --owner-from-path {self.template!r}"
        email = _email(match.group("email"))
        if email is None:
            return None, "", f"{path}: {match.group('email')!r} is not an email address"
        return email, match.group("name"), None


def _email(text: str) -> str | None:
    """An owner's email as accounts are matched, or None if the text is no email address."""
    email = normalize_email(text)
    return email if EMAIL.match(email) else None


def _identity(path: str) -> object:
    """Which file a path is: its device and inode (a symlink and its target are one file), else
    the path made normal (a file that is not there is refused when its turn comes)."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.normpath(path)
    return (st.st_dev, st.st_ino)


def _manifest(path: Path, source_name: str) -> list[FileSource]:
    """A CSV with a header naming `path` and `email` (in any case, in any order, other columns
    left alone); paths relative to the manifest's folder. What cannot be read as a list of files is
    an error of the whole manifest, with its line; a row whose email is no email address refuses
    that file alone."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = next((row for row in reader if any(c.strip() for c in row)), [])
            columns = [c.strip().lower() for c in header]
            if not {"path", "email"} <= set(columns):
                raise SourcesError(f"{path}: a manifest needs a header line naming its path and email columns")
            at, email_at = columns.index("path"), columns.index("email")
            folder = os.path.abspath(path.parent)
            files: list[FileSource] = []
            seen: dict[object, tuple[int, str]] = {}
            end = reader.line_num  # the last line read: the header's
            for row in reader:
                started, line = end + 1, reader.line_num  # a quoted field may span lines
                end = line
                if not any(c.strip() for c in row):
                    continue
                if any("\n" in c or "\r" in c for c in row):  # a path or email does not span lines
                    raise SourcesError(f"{path}: line {started}: a double quote is not closed on its line")
                if len(row) > len(columns) and any(c.strip() for c in row[len(columns) :]):
                    raise SourcesError(
                        f"{path}: line {line}: {len(row)} fields, the header names {len(columns)} "
                        "(a path with a comma in it goes in double quotes)"
                    )
                raw = row[at].strip() if at < len(row) else ""
                if not raw:
                    raise SourcesError(f"{path}: line {line}: path is empty")
                file = str(path.parent / raw)
                same = _identity(os.path.join(folder, raw))
                if same in seen:
                    first, spelled = seen[same]
                    raise SourcesError(f"{path}: line {line}: {raw} is listed twice (line {first}: {spelled})")
                seen[same] = (line, raw)
                given = row[email_at].strip() if email_at < len(row) else ""
                email = _email(given)
                error = None if email else f"{file}: {given!r} ({path}, line {line}) is not an email address"
                name = posixpath.normpath(Path(raw).as_posix())
                files.append(FileSource(file, f"{source_name}:{name}", email, error))
    except FileNotFoundError:
        raise SourcesError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SourcesError(f"{path}: is a directory, not a manifest") from None
    except UnicodeDecodeError:
        raise SourcesError(f"{path}: not UTF-8") from None
    except csv.Error as exc:
        raise SourcesError(f"{path}: not a CSV file ({exc})") from None
    if not files:
        raise SourcesError(f"{path}: the manifest lists no files")
    return sorted(files, key=lambda f: f.legacy_source)
