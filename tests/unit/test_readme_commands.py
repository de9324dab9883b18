"""Every command the README shows names things of this repository that exist: scripts and the
flags their --help lists, make targets and the variables they read, llmrouter's subcommands
and flags, chart values, example files. Documentation that drifts from the code fails here,
not on a new user's first try.

Commands are the lines of ```sh blocks and the inline `code` that starts with a command this
repository provides or that takes its files (make, hack/…, .venv/bin/python, llmrouter,
kubectl, helm, docker). Other programs' flags are not checked; their path arguments are."""

from __future__ import annotations

import functools
import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SHELL_FENCES = {"sh", "bash", "shell", "console"}
COMMAND_WORDS = ("make", ".venv/bin/python", "llmrouter", "kubectl", "helm", "docker")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Flags the README names in prose that belong to another program: llama-server, as the
# operator runs it.
OTHER_PROGRAMS_FLAGS = {
    # llama-server's, which the README names where it says what the operator sets
    "--ctx-size",
    "--parallel",
    "--metrics",
    "--api-key",
    "--alias",
    "--model",
    "-m",
}


def fenced_commands() -> list[str]:
    commands = []
    for lang, body in FENCE.findall(README):
        if lang in SHELL_FENCES:
            joined = body.replace("\\\n", " ")
            commands += [line.strip() for line in joined.splitlines() if line.strip()]
    return commands


def inline_spans() -> list[str]:
    return re.findall(r"`([^`\n]+)`", FENCE.sub("", README))


def inline_commands() -> list[str]:
    return [
        span
        for span in inline_spans()
        if span.split()[0] in COMMAND_WORDS or (span.startswith("hack/") and " " in span)
    ]


def simple_commands(line: str) -> list[list[str]]:
    """A command line's simple commands, each a list of words, `[optional]` brackets dropped."""
    words = [w.strip("[]") for w in shlex.split(line, comments=True)]
    commands: list[list[str]] = [[]]
    for word in words:
        if word in ("|", "||", "&&", ";"):
            commands.append([])
        elif word:
            commands[-1].append(word)
    # Environment assignments before the program are not the program.
    return [c[next(i for i, w in enumerate(c) if "=" not in w) :] for c in commands if c]


@functools.cache
def help_text(*cmd: str) -> str:
    # Safe path: the repository's `operator` folder must not shadow the standard library.
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    done = subprocess.run(
        [*cmd, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{' '.join(cmd)} --help failed:\n{done.stderr}"
    return done.stdout


def llmrouter(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "llmrouter", *args)


def flags(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.match(r"--?[A-Za-z]", w)]


def missing_flags(words: list[str], help_of: str, what: str) -> list[str]:
    return [
        f"{what} has no {flag} (not in its --help)"
        for flag in flags(words)
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_of)
    ]


def missing_paths(words: list[str]) -> list[str]:
    """Words that look like a path into this repository (their first part is there) but
    name nothing."""
    problems = []
    for word in words:
        if word.startswith(("-", "/")) or "/" not in word or "://" in word:
            continue
        if (REPO / word.split("/")[0]).exists() and not (REPO / word).exists():
            problems.append(f"{word}: no such file or folder in the repository")
    return problems


def check_make(args: list[str]) -> list[str]:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+):", makefile, re.MULTILINE))
    problems = []
    for arg in args:
        if "=" in arg:
            var = arg.split("=", 1)[0]
            if f"$({var})" not in makefile:
                problems.append(f"make {var}=…: the Makefile never reads {var}")
        elif not arg.startswith("-") and arg not in targets:
            problems.append(f"make {arg}: no such target")
    return problems


def check_script(script: str, args: list[str]) -> list[str]:
    path = REPO / script
    if not path.is_file():
        return [f"{script}: no such script"]
    problems = missing_paths(args)
    if path.suffix == ".py":
        problems += missing_flags(args, help_text(sys.executable, str(path)), script)
    elif not os.access(path, os.X_OK):
        problems.append(f"{script} is not executable")
    return problems


def check_llmrouter(args: list[str], path: tuple[str, ...] = ()) -> list[str]:
    """``llmrouter [PATH…] ARGS``: subcommands (at any depth), flags and paths."""
    text = help_text(*llmrouter(*path))
    what = " ".join(("llmrouter", *path))
    listed = re.search(r"positional arguments:\s+\{([\w,-]+)\}", text)
    subcommands = listed.group(1).split(",") if listed else []
    sub = next((a for a in args if a in subcommands), None)
    if sub is None:
        named = [a for a in args if not a.startswith("-")]
        if subcommands and named:
            return [f"{what} {named[0]}: no such subcommand"]
        return missing_flags(args, text, what) + missing_paths(args)
    at = args.index(sub)
    return missing_flags(args[:at], text, what) + check_llmrouter(args[at + 1 :], (*path, sub))


def check_helm_values(args: list[str]) -> list[str]:
    chart = next((a for a in args if a.startswith("charts/")), None)
    if chart is None:
        return []
    values: Any = yaml.safe_load((REPO / chart / "values.yaml").read_text())
    problems = []
    for flag, assignment in itertools.pairwise(args):
        if flag != "--set":
            continue
        found = values
        for part in assignment.split("=", 1)[0].split("."):
            if not isinstance(found, dict) or part not in found:
                problems.append(f"helm --set {assignment}: {chart} has no such value")
                break
            found = found[part]
    return problems


def check(words: list[str]) -> list[str]:
    program, args = words[0], words[1:]
    if program == "make":
        return check_make(args)
    if program.endswith(("/python", "/python3")) or program in ("python", "python3"):
        return check_script(args[0], args[1:]) if args and args[0] != "-m" else []
    if program.startswith("hack/"):
        return check_script(program, args)
    if program == "llmrouter":
        return check_llmrouter(args)
    problems = missing_paths(args)
    if program == "helm":
        problems += check_helm_values(args)
    if program == "docker" and args[:1] == ["build"] and args[-1] == ".":
        problems += [] if (REPO / "Dockerfile").is_file() else ["docker build .: no Dockerfile"]
    return problems


COMMANDS = sorted(set(fenced_commands() + inline_commands()))


def test_the_readme_shows_commands() -> None:
    # The parsing must find what the README is known to show, or the checks below check nothing.
    assert any(c.startswith("make test") for c in COMMANDS)
    assert any("hack/bench_operator.py" in c for c in COMMANDS)
    assert any(c.startswith("llmrouter serve") for c in COMMANDS)
    assert any(c.startswith("helm install") for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_command_names_what_exists(line: str) -> None:
    problems = [p for words in simple_commands(line) for p in check(words)]
    assert not problems, f"README: {line}\n" + "\n".join(problems)


def test_paths_in_the_text_exist() -> None:
    spans = [s for s in inline_spans() if " " not in s]
    assert "examples/tenant.yaml" in spans
    problems = missing_paths(spans)
    assert not problems, "\n".join(problems)


def test_flags_in_the_text_are_llmrouters() -> None:
    """A flag named on its own (`--state redis://…`) is one of `llmrouter serve` or
    `llmrouter gateway`, or of a documented script."""
    scripts = sorted(set(re.findall(r"hack/\w+\.py", " ".join(COMMANDS))))
    known = "".join(
        [help_text(*llmrouter("serve")), help_text(*llmrouter("gateway"))]
        + [help_text(sys.executable, str(REPO / script)) for script in scripts]
    )
    bare = {span.split()[0] for span in inline_spans() if span.startswith("-")}
    problems = missing_flags(sorted(bare - OTHER_PROGRAMS_FLAGS), known, "llmrouter or a script")
    assert not problems, "\n".join(problems)
