"""The docs check (issue 27.4): every command in README.md, docs/ and deploy/ is at least parsed,
and every `zmq-ik` command line in them is checked against the CLI itself.

Checked: each ```bash block parses (``bash -n``), each ```python block compiles; each
`zmq-ik` command, in a shell block, a prose code span, an env-file example
(``ZMQ_IK_BROKER_ARGS=`` / ``ZMQ_IK_WORKER_ARGS=``), a unit's ``ExecStart`` (its variables
filled in from the unit and those examples) or a command's ``--help`` example, names a real
command and real options, with values the options' own parsers take (files it names need
not exist here); endpoints in env files are endpoints. Run for real, being cheap:
``zmq-ik --version``, ``-h``, every ``zmq-ik keygen`` (into a temporary directory). The
units pass ``systemd-analyze verify`` where it is installed. Docs cite issues with a link or
not at all. Long-running commands (``serve``, ``compute``...) run in their own tests.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT

from zmq_ik.cli import EXAMPLES, JAX_BACKENDS_LOG, main
from zmq_ik.protocol import check_endpoint, endpoints_setting

pytestmark = pytest.mark.timeout(60)

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy/README.md"]
UNITS = sorted((ROOT / "deploy").glob("*.service"))
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"(?<!`)`(zmq-ik [^`]+)`(?!`)")
ARGS_LINE = re.compile(r"^#?\s*ZMQ_IK_(BROKER|WORKER)_ARGS=(.*)$", re.M)
ENDPOINT_LINE = re.compile(r"^#?\s*(?:Environment=)?ZMQ_IK_(BIND|CONNECT|ENDPOINT)=(\S+)", re.M)
PLACEHOLDERS = {"...", "…"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks(path: Path) -> Iterator[tuple[str, str]]:
    """(language, text) of each fenced block of ``path``."""
    for m in FENCE.finditer(path.read_text()):
        yield m.group(1), m.group(2)


def shell_commands(script: str) -> Iterator[list[str]]:
    """Each simple command of a shell script, as words (comments, ``&&``, ``;``, ``|`` and
    line continuations handled as the shell does)."""
    for line in script.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        words: list[str] = []
        for token in lex:
            if set(token) <= set(";&|"):
                if words:
                    yield words
                words = []
            else:
                words.append(token)
        if words:
            yield words


def zmq_ik_args(words: list[str]) -> list[str] | None:
    """The arguments of a `zmq-ik` command (after ``sudo``, ``VAR=value`` and a path to the
    executable), or None for another command."""
    while words and (words[0] == "sudo" or re.match(r"^\w+=", words[0])):
        words = words[1:]
    if words and Path(words[0]).name == "zmq-ik":
        return words[1:]
    return None


def commands_in_docs() -> Iterator[tuple[str, list[str]]]:
    """(where, arguments) of every `zmq-ik` command in the docs, the units and the CLI's
    help examples."""
    for path in DOCS:
        text = path.read_text()
        for lang, block in blocks(path):
            if lang in SHELL:
                for words in shell_commands(block):
                    if (args := zmq_ik_args(words)) is not None:
                        yield f"{_rel(path)}: {shlex.join(words)}", args
        for m in SPAN.finditer(text):
            words = [w.strip("[]") for w in shlex.split(m.group(1))]
            yield f"{_rel(path)}: `{m.group(1)}`", words[1:]
    for path in [*DOCS, *UNITS]:
        for m in ARGS_LINE.finditer(path.read_text()):
            command = m.group(1).lower()
            yield f"{_rel(path)}: {m.group(0)}", [command, *shlex.split(m.group(2))]
    for path in UNITS:
        for args in unit_commands(path):
            yield f"{_rel(path)}: ExecStart {shlex.join(args)}", args
    for name, example in EXAMPLES.items():
        yield f"zmq-ik {name} --help", shlex.split(example)[1:]


def unit_commands(path: Path) -> Iterator[list[str]]:
    """The ``ExecStart`` of unit ``path`` with its variables filled in: ``${VAR}`` from the
    unit's ``Environment=``, ``%i`` as GPU 0, and ``$VAR`` (split into words by systemd) as
    empty and as each documented example of it."""
    text = path.read_text()
    env = dict(re.findall(r"^Environment=(\w+)=(\S*)$", text, re.M))
    [line] = re.findall(r"^ExecStart=(.*)$", text, re.M)
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line).replace("%i", "0")
    words = shlex.split(line)
    free = [w for w in words if w.startswith("$")]
    assert len(free) <= 1, (path, free)
    examples = [""]
    for doc in [*DOCS, *UNITS]:
        for m in ARGS_LINE.finditer(doc.read_text()):
            if free and free[0] == f"$ZMQ_IK_{m.group(1)}_ARGS":
                examples.append(m.group(2))
    for example in examples:
        filled = [a for w in words for a in ([w] if w not in free else shlex.split(example))]
        args = zmq_ik_args(filled)
        assert args is not None, (path, line)
        yield args


def _placeholders_dropped(command: click.Command, args: list[str]) -> list[str]:
    """``...`` standing for more arguments is dropped; as an option's value it stays."""
    takes_value = {
        flag
        for p in command.params
        if isinstance(p, click.Option) and not p.is_flag and not p.count
        for flag in p.opts
    }
    return [
        a
        for i, a in enumerate(args)
        if a not in PLACEHOLDERS or (i > 0 and args[i - 1] in takes_value)
    ]


def check_args(args: list[str]) -> None:
    """Parse ``zmq-ik ARGS`` as the CLI does, without running it: the command, its options
    and arguments, and each value through its option's own type and parser. Files and
    directories need not exist (``click.Path`` checks are left out); --help stops there."""
    args = list(args)
    while args and args[0] in ("-v", "-vv", "-q"):
        args = args[1:]
    if not args or args[0] in ("--version", "-h", "--help"):
        return
    name, *rest = args
    assert name in main.commands, f"no such command: {name!r}"
    command = main.commands[name]
    if "-h" in rest or "--help" in rest:
        return
    rest = _placeholders_dropped(command, rest)
    paths = {p: p.type for p in command.params if isinstance(p.type, click.Path)}
    root, jax = logging.getLogger(), logging.getLogger(JAX_BACKENDS_LOG)
    levels = root.level, jax.level
    try:
        for p in paths:
            p.type = click.STRING
        command.make_context(name, rest)
    finally:
        for p, t in paths.items():
            p.type = t
        root.setLevel(levels[0])
        jax.setLevel(levels[1])


# --------------------------------------------------------------------------- the checks


COMMANDS = list(commands_in_docs())


def test_the_docs_hold_commands_of_every_kind():
    """The collection itself works: commands from shell blocks, spans, env files, units."""
    wheres = " ".join(where for where, _ in COMMANDS)
    for expected in ("README.md: zmq-ik serve", "README.md: `zmq-ik", "ZMQ_IK_WORKER_ARGS=",
                     "zmq-ik-worker@.service: ExecStart", "deploy/README.md: sudo"):  # fmt: skip
        assert expected in wheres, expected
    assert {args[0] for _, args in COMMANDS if args} >= set(main.commands)


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_command_parses(where, args):
    try:
        check_args(args)
    except click.MissingParameter:  # a mention in prose (`zmq-ik report`), not a command line
        assert ": `zmq-ik" in where, where
    except click.ClickException as e:
        if "No such file or directory" not in e.format_message():  # a URDF named, say
            pytest.fail(f"{where}\n  {e.format_message()}")


@pytest.mark.parametrize("bad", [
    ["brokr"],
    ["broker", "--bind", "5555"],
    ["broker", "stray"],
    ["worker", "--robots", "x=y.urdf"],
    ["serve", "--gpu", "zero"],
    ["compute", "scene.yaml"],
    ["ping", "--count", "0"],
    ["keygen", "keys", "--name"],
])  # fmt: skip
def test_the_check_refuses_what_the_cli_refuses(bad):
    """A check that passed everything would prove nothing."""
    with pytest.raises((AssertionError, click.ClickException)):
        check_args(bad)


def test_shell_blocks_parse_and_python_blocks_compile(tmp_path):
    for path in DOCS:
        for i, (lang, block) in enumerate(blocks(path)):
            if lang in SHELL:
                script = tmp_path / "block.sh"
                script.write_text(block)
                done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
                assert done.returncode == 0, f"{_rel(path)} block {i}: {done.stderr}\n{block}"
            elif lang == "python":
                compile(block, f"{_rel(path)} block {i}", "exec")


def test_documented_endpoints_are_endpoints():
    """``ZMQ_IK_BIND=`` / ``ZMQ_IK_CONNECT=`` / ``ZMQ_IK_ENDPOINT=`` in env-file examples."""
    found = 0
    for path in [*DOCS, *UNITS]:
        for m in ENDPOINT_LINE.finditer(path.read_text()):
            value = m.group(2)
            if m.group(1) == "BIND":
                check_endpoint(value, "bind")
            else:
                endpoints_setting(value, m.group(1).lower())
            found += 1
    assert found >= 4


def test_the_cheap_commands_run(tmp_path):
    """``zmq-ik --version`` and ``-h``, and each documented ``zmq-ik keygen``, its directory
    moved under ``tmp_path`` (keygen never replaces a key: one directory per command)."""
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).exit_code == 0
    assert runner.invoke(main, ["-h"]).exit_code == 0
    keygens = [args for _, args in COMMANDS if args[:1] == ["keygen"] and len(args) > 1]
    assert len(keygens) >= 3
    for i, args in enumerate(keygens):
        directory = tmp_path / str(i) / Path(args[1]).name
        result = runner.invoke(main, ["keygen", str(directory), *args[2:]])
        assert result.exit_code == 0, (args, result.output)
        assert list(directory.glob("*.key_secret")), args


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_units_pass_systemd_analyze_verify(unit, tmp_path):
    """Unknown keys, bad values: what systemd would ignore with a warning at boot. (The
    executable is not installed here: that complaint is expected.)"""
    copy = tmp_path / unit.name.replace("@.", "@0.")
    copy.write_text(unit.read_text())
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, cwd=tmp_path
    )
    about_it = [  # (what it says about the host, e.g. no system bus, is not ours to judge)
        line
        for line in (done.stdout + done.stderr).splitlines()
        if copy.name in line and "is not executable" not in line
    ]
    assert not about_it, about_it


def test_the_bundled_robot_is_used_as_bundled():
    """Issue 27.4: deploy/README.md pointed `--robot tatbot=/etc/zmq-ik/tatbot.urdf` at a file
    nobody has; a worker serves the bundled tatbot without any option."""
    for where, args in COMMANDS:
        assert not any(a.startswith("tatbot=") for a in args), where


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_restart_policies_keep_restarting(unit):
    """Issue 27.4: `Restart=on-failure` with `RestartSec=1` hit systemd's default start limit
    (5 starts within 10 s) and left a broker waiting for its port failed for good, while the
    guide said it kept trying. A restarting unit turns the limit off, or restarts slowly
    enough never to reach it."""
    text = unit.read_text()
    keys = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert keys.get("Restart", "no") != "no"
    interval = float(keys.get("StartLimitIntervalSec", "10").removesuffix("s"))
    burst = int(keys.get("StartLimitBurst", "5"))
    restart_sec = float(keys.get("RestartSec", "0.1").removesuffix("s"))
    assert interval == 0 or restart_sec * (burst - 1) > interval, keys
    assert "StartLimitIntervalSec" not in keys or re.search(
        r"^\[Unit\][^\[]*^StartLimitIntervalSec=", text, re.M | re.S
    ), "StartLimitIntervalSec belongs in [Unit]"


def test_docs_cite_issues_with_a_link_or_not_at_all():
    """``#25.4`` means nothing to a reader without the tracker; code spans (quoted log lines
    such as `restart #1`) and links are fine."""
    cited = []
    for path in [*DOCS, *UNITS]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            prose = re.sub(r"`[^`]*`|\[[^\]]*\]\([^)]*\)", "", line)
            for m in re.finditer(r"(?i)\bissues? #?\d+|(?<![\w&/])#\d+", prose):
                cited.append(f"{_rel(path)}:{n}: {m.group(0)}")
    assert not cited, cited
