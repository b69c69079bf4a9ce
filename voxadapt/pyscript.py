"""What every pyscript shares: argument parsing, config and layout options, logging, and clean
one-line errors with exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from voxadapt.errors import VoxadaptError

log = logging.getLogger("voxadapt")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors in the one-line 'ERROR: ...' form of every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"ERROR: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def make_parser(description: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    return parser


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="experiment YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set data.corpus=voxceleb (repeatable)")


def config_from_args(args: argparse.Namespace):  # noqa: ANN201 - avoids importing config at module load
    from voxadapt.config import load_config

    return load_config(args.config, args.overrides)


def shell_assignments(values: dict[str, str | dict[str, str]]) -> str:
    """`name=value` lines (dicts as associative arrays) that bash can eval safely."""
    lines = []
    for key, value in values.items():
        if isinstance(value, dict):
            items = " ".join(f"[{shlex.quote(k)}]={shlex.quote(v)}" for k, v in value.items())
            lines.append(f"declare -A {key}=({items})")
        else:
            lines.append(f"{key}={shlex.quote(value)}")
    return "\n".join(lines)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def one_line(err: BaseException) -> str:
    """The message of `err` on one line. Errors raised in DataLoader workers arrive wrapped with
    the worker's traceback; their own message is the traceback's last line."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith(("Error", "Exception")) else last
    return " ".join(text.split("\n"))


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run `main` and turn user errors into 'ERROR: ...' on stderr with a non-zero exit.

    A traceback is shown only with --debug (or VOXADAPT_DEBUG=1): users see the one-line reason
    and the fix; developers can still get the stack.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("VOXADAPT_DEBUG") == "1"
    setup_logging()
    try:
        code = main(args)
    except VoxadaptError as err:
        if debug:
            raise
        print(f"ERROR: {one_line(err)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:
        if debug:
            raise
        # Disk full, permission denied, missing directory: name the path the OS complained about.
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"ERROR: {where}{err.strerror or err}; check the path, its permissions and free space",
              file=sys.stderr)
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - last resort: keep the one-line contract
        if debug:
            raise
        print(f"ERROR: internal error: {type(err).__name__}: {one_line(err)} (rerun with --debug for a traceback)",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
