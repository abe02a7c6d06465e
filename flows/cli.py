"""What every flow's command line shares: the parser built from the flow's parameter model
(`add_parameters`, `parse`), the database and report flags, --json, the progress bar, running a
flow and turning its outcome into an exit code (0 ok, 1 verification failed, 2 bad input,
usage or a missing privilege, 3 database unavailable or busy, 130 Ctrl-C, 143 SIGTERM) with a
one-line error, never a traceback.

SIGTERM is raised in the main thread as `Interrupted`, a KeyboardInterrupt like Ctrl-C's (Prefect
turns it into its TerminationSignal while a flow runs): the flow marks its run interrupted and
writes its report, the chunk or batch in flight commits or rolls back whole, and the command exits
with 128 + the signal's number once it has stopped its temporary Prefect server (orchestrator.py).
A signal whose exception lands where Python can only print it (a finalizer) is sent again.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

from pydantic import ValidationError

from flows import orchestrator, progress
from flows import params as P
from flows.params import Parameters
from tasks import interpreter
from tasks.db import normalize_url, redact
from tasks.errors import Interrupted, UserFacingError, first_line


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line on a usage error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_common(parser: argparse.ArgumentParser) -> None:
    _add_database_url(parser)
    parser.add_argument(
        "--report-dir",
        default="runs",
        type=report_dir,
        metavar="DIR",
        help="where <run_id>/report.json and report.md go (default: runs)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON on stdout (for scripts)"
    )


def _add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL, else the embedded server under .data/postgres). "
        "It is handed to the flow through the environment, never as a stored flow parameter.",
    )


def report_dir(path: str) -> str:
    """--report-dir, checked before anything is written: a directory this process can write in (made
    if missing). A disk that fills up later is ReportNotWritten (flows/outcome.py)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write reports in {path}: {exc.strerror or exc}") from None
    return path


def subcommands(parser: argparse.ArgumentParser) -> Any:
    """Subcommands whose usage errors also exit 2 with one line."""
    return parser.add_subparsers(dest="command", required=True, parser_class=Parser)


class _TemplateCopy(argparse.Action):
    """--template-copy reaches the branch provider as BRANCH_COPY of this process (like --database-url)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        os.environ["BRANCH_COPY"] = "template"
        setattr(namespace, self.dest, True)


def add_provider(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        choices=["local", "neon"],
        help="branch provider (default: $BRANCH_PROVIDER, else local)",
    )
    _add_template_copy(parser)


def _add_template_copy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--template-copy",
        nargs=0,
        action=_TemplateCopy,
        default=False,
        help="local branches and checkpoints: copy with CREATE DATABASE ... TEMPLATE, faster but it ends "
        "every other session on the database (for quiet moments; default: an online copy)",
    )


# The flags whose names are not their parameter's, and the checks a flag makes on this machine
# before a flow starts (said here once for every command line). A deployment's database_secret has
# no flag: on the command line the database is --database-url.
FLAGS = {
    "branch_provider": "--provider",
    "lock_wait_seconds": "--lock-wait",
    "fix": "--fix-orphans",
    "field_map": "--map",
    "mapping_file": "--mapping",
}
CHECKS: dict[str, Callable[[str], Any]] = {"report_dir": report_dir}
NOT_ON_THE_COMMAND_LINE = {"database_secret", "shard", "shard_deployment"}  # the last two: set by --shards


def flag(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def add_parameters(
    parser: argparse.ArgumentParser, model: type[Parameters], *, positional: tuple[str, ...] = ()
) -> None:
    """The command line of a flow, built from its parameter model (flows/params.py): one flag per
    field with its type, choices, default and help, `positional` ones as arguments. A boolean that
    defaults to true is turned off with `--no-…`. The bounds are the model's, checked by
    `parameters()`. A branch provider brings --template-copy with it; a report dir, --json."""
    for name, info in P.fields(model):
        if name in NOT_ON_THE_COMMAND_LINE:
            continue
        kind, optional = _kind(info.annotation)
        kind = CHECKS.get(name, kind)
        default = None if info.is_required() else info.default
        help_text = (info.description or "").replace("%", "%%")
        if default not in (None, False, True):
            help_text += f" (default: {default})"
        choices = get_args(kind) if get_origin(kind) is Literal else None
        if name in positional:
            parser.add_argument(name, type=None if choices else kind, choices=choices, default=default,
                                nargs=None if info.is_required() else "?", help=help_text)  # fmt: skip
        elif get_origin(kind) is list:
            parser.add_argument(flag(name), dest=name, action="append", metavar=name.split("_")[-1].upper(),
                                help=help_text + " (repeatable)")  # fmt: skip
        elif kind is bool:
            if default:
                off = f"turn off: {help_text[:1].lower()}{help_text[1:]}"
                parser.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false", help=off)
            else:
                parser.add_argument(flag(name), dest=name, action="store_true", help=help_text)
        else:
            parser.add_argument(flag(name), dest=name, type=None if choices else kind, choices=choices,
                                default=default, metavar=None if choices else name.split("_")[-1].upper(),
                                help=help_text)  # fmt: skip
    if "branch_provider" in model.model_fields:
        _add_template_copy(parser)
    if "database_secret" in model.model_fields:
        _add_database_url(parser)
    if "report_dir" in model.model_fields:
        parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout (for scripts)")


def _kind(annotation: Any) -> tuple[Any, bool]:
    """(the type a flag converts to, whether None is allowed) of a field's annotation."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return args[0], True
    return annotation, False


def parameters(parser: argparse.ArgumentParser, model: type[P.ParametersT], args: argparse.Namespace) -> P.ParametersT:
    """The flow's parameters from the parsed command line, validated by the model (a bound broken
    is a usage error: one line, exit 2)."""
    values = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"{flag(str(first['loc'][0]))}: " if first["loc"] else ""
        parser.error(where + first["msg"].removeprefix("Value error, "))
        raise  # parser.error exits


@dataclass(frozen=True)
class Command:
    """One command of a flow's command line: the flow's parameter model (flows/params.py; None for a
    command that only reads), which parameters are positional, its help, and flags of its own."""

    model: type[Parameters] | None
    help: str
    positional: tuple[str, ...] = ()
    extra: Callable[[argparse.ArgumentParser], None] | None = None

    def build(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        if self.model is not None:
            add_parameters(parser, self.model, positional=self.positional)
        if self.extra is not None:
            self.extra(parser)
        return parser


def parse(
    prog: str, description: str, epilog: str, commands: dict[str | None, Command], argv: list[str] | None
) -> tuple[str | None, Parameters | None, argparse.Namespace]:
    """The one way every flow's command line is parsed. `commands` by name; the one named None is
    what runs when argv names none of the others (`python -m flows.audit --source F` beside
    `python -m flows.audit undo-fix RUN_ID`). Returns (command, its validated parameters, the flags)."""
    argv = sys.argv[1:] if argv is None else argv
    named = {k: v for k, v in commands.items() if k is not None}
    formatter = argparse.RawDescriptionHelpFormatter
    if None in commands and not (argv and argv[0] in named):
        lines = [epilog, *(f"{prog} {' '.join([k, *(a.upper() for a in c.positional)])}: {c.help}" for k, c in named.items())]
        text = "\n".join(textwrap.fill(line, 100, subsequent_indent="    ") for line in lines)
        parser = commands[None].build(Parser(prog=prog, description=description, epilog=text,
                                             formatter_class=formatter))  # fmt: skip
        name, args = None, parser.parse_args(argv)
    else:
        top = Parser(prog=prog, description=description, epilog=epilog, formatter_class=formatter)
        subs = subcommands(top)
        parsers = {k: c.build(subs.add_parser(k, help=c.help, description=c.help)) for k, c in named.items()}
        args = top.parse_args(argv)
        name, parser = args.command, parsers[args.command]
    model = commands[name].model
    return name, None if model is None else parameters(parser, model, args), args


def apply_database_url(url: str | None) -> None:
    """--database-url reaches the flow as DATABASE_URL of this process only (checked first: a
    malformed URL is a usage error, raised as InputError before any flow starts)."""
    url = url or os.environ.get("DATABASE_URL")
    if url:
        os.environ["DATABASE_URL"] = normalize_url(url)


def fail(message: str, code: int = 2) -> int:
    print(f"error: {redact(message, os.environ.get('DATABASE_URL'))}", file=sys.stderr)
    return code


def refuse(exc: UserFacingError, server: orchestrator.TemporaryServer | None) -> int:
    """fail() for input refused before the flow starts, the temporary server started for it stopped."""
    if server is not None:
        server.stop()
    return fail(str(exc), exc.exit_code)


@contextmanager
def progress_bar(enabled: bool):
    """A progress bar on stderr when it is a terminal; silent otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    ids: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in ids:
            ids[stage] = bar.add_task(stage, total=total)
        bar.update(ids[stage], completed=done, total=total)

    stop = progress.listen(update)
    with bar:
        try:
            yield
        finally:
            stop()


class _OneLine(logging.Filter):
    """Our errors are one line, safe to show: Prefect's run loggers log them without the traceback
    they add to every failure (an unexpected error keeps its traceback: it is a bug to report)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flows.outcome import interruption

        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, UserFacingError) or interruption(exc) is not None):
            record.exc_info, record.exc_text = None, None
        return True


RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine", "prefect.engine")


def run_flow(
    flow_call: Callable[[], Any],
    *,
    as_json: bool,
    summary: Callable[[dict[str, Any]], str],
    server: orchestrator.TemporaryServer | None = None,
) -> int:
    """Run a flow that returns an outcome dict (or a Failed state carrying one); print and exit.
    Without a configured Prefect API the flow talks to a temporary server (started early by the
    caller and handed in, or started here)."""
    from flows.outcome import exit_code_of, interruption

    for name in RUN_LOGGERS:
        logging.getLogger(name).addFilter(_OneLine())
    try:
        with orchestrator.connected(server or orchestrator.start()):
            state = flow_call()
        outcome = state.result(raise_on_failure=False)
    except UserFacingError as exc:
        return fail(str(exc), exc.exit_code)
    except BaseException as exc:
        signum = interruption(exc)
        if signum is None:
            raise
        return interrupted(signum)
    if isinstance(outcome, BaseException):
        text = str(outcome) if isinstance(outcome, UserFacingError) else f"{type(outcome).__name__}: {first_line(outcome)}"
        return fail(text, exit_code_of(outcome))
    if not isinstance(outcome, dict):
        return fail(f"unexpected flow result: {outcome!r}", 1)
    if "error" in outcome:
        return fail(outcome["error"], outcome["exit_code"])
    if as_json:
        print(Path(outcome["report"]).with_suffix(".json").read_text(encoding="utf-8"), end="")
    else:
        print(summary(outcome))
    return int(outcome["exit_code"])


def interrupted(signum: int) -> int:
    name = signal.Signals(signum).name
    return fail(f"interrupted by {name}; the run is marked interrupted: the same command resumes it", 128 + signum)


def _terminate(signum: int, _frame: Any) -> None:
    """The first SIGTERM unwinds the main thread; later ones wait for that clean-up to finish."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


REDELIVERY_DELAY_S = 0.01  # after the main thread has left the place that swallowed it, as a rule


def _redeliver(unraisable: Any) -> None:
    """sys.unraisablehook while a command runs. A signal's handler runs wherever the main thread
    is; inside a finalizer, or a check the interpreter makes on its own (seen: Prefect's
    TerminationSignal raised inside an isinstance check, an upgrade that then ran to its end and
    exited 0), its exception cannot unwind anything and Python only prints it: the interruption
    would be lost. It is sent again instead, from a moment later, so that it arrives where it
    can unwind (sent again if that place swallows it too); anything else is printed as before."""
    from flows.outcome import interruption  # imports Prefect: only once there is something to tell

    signum = interruption(unraisable.exc_value) if unraisable.exc_value is not None else None
    if signum is None:
        sys.__unraisablehook__(unraisable)
        return
    if signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _terminate)  # _terminate ignored the later ones: this is the first again
    threading.Timer(REDELIVERY_DELAY_S, os.kill, (os.getpid(), signum)).start()


def run_command(main: Callable[[], int]) -> NoReturn:
    """`python -m flows.<command>`: run main and exit with its code (see the module's docstring)."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = _redeliver
    try:
        code = main()
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM outside a flow run: before or after it
        code = interrupted(getattr(exc, "signum", signal.SIGINT))
    finally:  # what is left is the clean-up at exit (the temporary server's stop): let it finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.unraisablehook = sys.__unraisablehook__
    interpreter.before_exit()
    sys.exit(code)


__all__ = [
    "Command",
    "Parser",
    "add_common",
    "add_parameters",
    "add_provider",
    "apply_database_url",
    "fail",
    "interrupted",
    "parameters",
    "parse",
    "progress_bar",
    "refuse",
    "report_dir",
    "run_command",
    "run_flow",
    "subcommands",
]
