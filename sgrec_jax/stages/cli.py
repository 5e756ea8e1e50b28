"""What every command-line entry point shares: a readable console log and clean failures.

Bad input and config mistakes print one `error: ...` line and exit 1 (no traceback; it is logged
at debug verbosity); a preempted or paused training exits 143 after its checkpoint is saved.
That holds from the first flag on: an entry point starts with `run_app(main)` instead of absl's
`app.run(main)`, so a mistyped flag or config field (`--config.sft.num_stepz=3`), a value of the
wrong type, a missing config file or a bad `--config=FILE:ARG` fails the same way, naming the
flag and, for a field, the closest valid names.
"""

from __future__ import annotations

import difflib
import logging as std_logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from absl import app, flags, logging
from ml_collections import ConfigDict
from ml_collections.config_flags import config_path
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.train.loop import Preempted

T = TypeVar("T")
PREEMPTED_EXIT_CODE = 143
_BAD_INPUT = (DataFormatError, UnknownNameError, ValueError)


class _QuietLibraries(std_logging.Filter):
    """Keeps library INFO chatter (Orbax logs every save step, httpx every request) out of the
    console log."""

    NOISY = ("/orbax/", "/grain/", "/jax/_src/", "/httpx/", "/httpcore/")

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self.NOISY
        )


def define_workdir(help_text: str) -> flags.FlagHolder:
    """--workdir of an experiments/ command that tests import to call its logic directly.

    Several such modules share the name; pytest workers collect every test module, so they are
    imported into one process, where a second plain DEFINE_string("workdir") raises
    DuplicateFlagError. allow_override lets the later definition replace the earlier one; a
    command line only ever loads one command, and tests never parse these flags.
    """
    return flags.DEFINE_string("workdir", None, help_text, allow_override=True)


def quiet_library_logs() -> None:
    logging.get_absl_handler().addFilter(_QuietLibraries())


def run_or_exit(fn: Callable[[], T]) -> T:
    """Runs fn(); known failures become one stderr line and an exit code."""
    try:
        return fn()
    except Preempted as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
    except _BAD_INPUT as e:
        logging.debug("traceback of the error below", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def run_app(main: Callable[[list[str]], Any]) -> None:
    """absl's app.run(main), with command-line mistakes (bad flags, and app.UsageError from main)
    reported as one `error:` line and exit 1."""

    def main_or_exit(argv: list[str]) -> Any:
        try:
            return main(argv)
        except app.UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    app.run(main_or_exit, flags_parser=parse_flags_or_exit)


class CommandLineError(flags.Error):
    """A flag absl accepts as a string but that names or holds something invalid."""


def parse_flags_or_exit(argv: Sequence[str]) -> list[str]:
    """flags.FLAGS(argv), but a mistake prints one `error:` line and exits 1 (absl prints two
    lines, and ml_collections' errors about config fields are tracebacks)."""
    configs = {}  # config flag name -> its checking parser
    for name in list(flags.FLAGS):
        flag = flags.FLAGS[name]
        if isinstance(flag.parser, ConfigFileFlagParser):
            flag.parser = _CheckedConfigParser(flag.parser, name, argv)
        if isinstance(flag.parser, _CheckedConfigParser):
            configs[name] = flag.parser
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as e:
        print(f"error: {_describe(e, configs)}", file=sys.stderr)
        sys.exit(1)


def _describe(error: flags.Error, configs: dict[str, _CheckedConfigParser]) -> str:
    """absl's message without its "flag " prefix; for a config field, the field's type."""
    lines = str(error).splitlines()
    if len(lines) > 1 and all(line.startswith("flag ") for line in lines):  # required flags
        message = "; ".join(line.removeprefix("flag ").rstrip(".") for line in lines)
    else:
        message = str(error).removeprefix("flag ")
    for name, parser in configs.items():
        field = re.match(rf"--{re.escape(name)}\.([\w.]+)=", message)
        if field and isinstance(parser.config, ConfigDict):
            try:
                current = config_path.get_value(field.group(1), parser.config)
            except (KeyError, IndexError, AttributeError, ValueError):
                continue
            if current is not None and not isinstance(current, ConfigDict):
                message += f" (the field is {type(current).__name__}, now {current!r})"
    return message


class _CheckedConfigParser:
    """Wraps a config flag's file parser: after loading the config it checks every override's
    field path on the command line, before ml_collections turns a mistake into a traceback."""

    def __init__(self, parser: Any, name: str, argv: Sequence[str]):
        self._parser = parser
        self._name = name
        self._argv = list(argv)
        self.config: Any = None

    def __getattr__(self, attr: str) -> Any:  # flag_type() and the like, for --help
        parser = self.__dict__.get("_parser")  # Absent while copy or pickle rebuild the object.
        if parser is None:
            raise AttributeError(attr)
        return getattr(parser, attr)

    def parse(self, argument: str) -> Any:
        path = argument.split(":", 1)[0]
        if not os.path.isfile(path):
            raise CommandLineError(f"--{self._name}={argument}: no config file {path!r}")
        try:
            config = self._parser.parse(argument)
        except _BAD_INPUT as e:
            # ml_collections re-raises a config's ValueError with its traceback as the message.
            cause = e.__context__ if isinstance(e.__context__, _BAD_INPUT) else e
            raise CommandLineError(f"--{self._name}={argument}: {cause}") from e
        self.config = config
        if isinstance(config, ConfigDict):
            for field in self._overrides():
                _check_field(config, field, f"--{self._name}.{field}")
        return config

    def _overrides(self) -> list[str]:
        """The dotted field of each --NAME.FIELD[=VALUE] / --noNAME.FIELD on the command line."""
        pattern = re.compile(rf"--?(?:no)?{re.escape(self._name)}\.([^=]+)")
        argv = flags.FLAGS.read_flags_from_files(self._argv, force_gnu=False)
        return [m.group(1) for m in map(pattern.match, argv[1:]) if m]


def _check_field(config: ConfigDict, field: str, flag: str) -> None:
    """Raises CommandLineError naming the closest valid names when `field` is not in config."""
    node: Any = config
    walked: list[str] = []
    for part in field.split("."):
        if not part.isidentifier():
            return  # An index (`list[0]`) or odd syntax: ml_collections' parser decides.
        if node is None:
            return  # A None field may be a dataclass ml_collections initialises.
        where = ".".join(walked) or "the config"
        if not isinstance(node, ConfigDict):
            raise CommandLineError(
                f"{flag}: {where} is a field ({type(node).__name__}), not a section"
            )
        if part not in node:
            names = sorted(node.keys())
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
            hint = (f"did you mean {_either(close)}?" if close
                    else f"valid fields: {', '.join(names)}")
            raise CommandLineError(f"{flag}: {where} has no field {part!r}; {hint}")
        walked.append(part)
        node = node[part]


def _either(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
