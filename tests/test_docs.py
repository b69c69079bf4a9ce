"""The commands the README and docs/ show: every script they name exists, and every option they pass
is one the script takes (its --help lists it), so a renamed or removed option fails here, not for a
reader. The commands themselves run in the tests of each tool (test_cli.py, test_evaluate.py, ...)."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys

import pytest
from helpers import ROOT, venv_env

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = re.compile(r"^(\./)?(run\.sh|local/\S+\.(sh|sbatch)|steps/\S+\.sh|utils/\S+\.sh|tests/run\.sh)$")


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[list[str]]:
    """The block's command lines (continuations joined, comments dropped) as words; a `sbatch --wrap`
    gives the command it wraps, and a script given to sbatch is the command."""
    joined = re.sub(r"\\\n", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        while words and re.match(r"^[A-Za-z_]+=", words[0]):  # VAR=value before the command
            words = words[1:]
        if words[:1] == ["sbatch"]:
            if "--wrap" in words:
                words = shlex.split(words[words.index("--wrap") + 1])
            else:
                words = next((words[i:] for i, w in enumerate(words) if SCRIPT.match(w)), [])
        if words:
            out.append(words)
    return out


def tool(words: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """(the command that prints the tool's --help, the words after it), for the recipe's own tools."""
    if SCRIPT.match(words[0]):
        return ("bash", words[0].removeprefix("./")), words[1:]
    if words[0] == "python" and len(words) > 1 and words[1].startswith("pyscripts/"):
        return (sys.executable, words[1]), words[2:]
    if words[:3] == ["python", "-m", "voxadapt.stages"]:
        return (sys.executable, "-m", "voxadapt.stages", words[3]), words[4:]
    if words[0] == "voxadapt":
        return (sys.executable, "-m", "voxadapt", words[1]), words[2:]
    return None


@functools.cache
def help_text(cmd: tuple[str, ...]) -> str:
    script = cmd[1] if cmd[0] == "bash" or cmd[1].startswith("pyscripts/") else None
    if script == "local/slurm_train.sbatch":  # it passes its options on to run.sh
        cmd = ("bash", "run.sh")
    elif script is not None:
        assert (ROOT / script).is_file(), f"{script} is named in the docs but does not exist"
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=ROOT, env=venv_env(), timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} --help: {proc.stderr[-500:]}"
    return proc.stdout


DOC_COMMANDS = [(doc.relative_to(ROOT).as_posix(), words) for doc in DOCS
                for block in shell_blocks(doc.read_text()) for words in commands(block) if tool(words)]


def test_the_docs_show_the_main_commands():
    shown = {" ".join(w for w in tool(words)[0] if w not in ("bash", sys.executable, "-m")) for _, words in DOC_COMMANDS}
    assert shown >= {"run.sh", "local/evaluate.sh", "local/slurm_train.sbatch", "voxadapt embed", "voxadapt verify",
                     "voxadapt score", "pyscripts/score_trials.py"}


@pytest.mark.parametrize("doc, words", DOC_COMMANDS, ids=[f"{d}:{' '.join(w)[:60]}" for d, w in DOC_COMMANDS])
def test_every_option_a_doc_passes_is_one_its_tool_takes(doc, words):
    cmd, args = tool(words)
    text = help_text(cmd)
    for word in args:
        option = word.split("=", 1)[0]
        if option.startswith("--") and option != "--help":
            assert re.search(rf"(^|[\s\[(,]){re.escape(option)}\b", text), f"{doc}: {' '.join(words)}: " \
                f"{option} is not an option of {' '.join(cmd)}"


def test_the_option_check_catches_a_wrong_option():
    assert tool(["./run.sh", "--stage", "1"]) == (("bash", "run.sh"), ["--stage", "1"])
    assert not re.search(r"(^|[\s\[(,])--no_such_option\b", help_text(("bash", "run.sh")))
    assert commands('sbatch -c 4 --wrap "./run.sh --stage 0 \\\n --nj 2"') == [["./run.sh", "--stage", "0", "--nj", "2"]]
    assert commands("A=1 B='x y' ./run.sh --stage 5  # note") == [["./run.sh", "--stage", "5"]]
