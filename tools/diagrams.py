"""Draws the diagrams of ``docs/diagrams/`` (``make diagrams``) and checks that they are current.

Usage: ``python -m tools.diagrams [--check]``.

``update-states.dot`` is generated: its states are the journal's (``UpdateState`` and
``FINAL_STATES`` in ``sota_client/_store.py``), its edges the transitions table of
``docs/reliability.md`` (the one headed ``| from | to | when | written in the same transaction
|``), and generating it fails, naming the state, when the table names a state the enum lacks or
the enum has a state no transition names. The other ``.dot`` files are written by hand. Each
``.dot`` is rendered to an ``.svg`` next to it with graphviz's ``dot -Tsvg``, and the SVG gets a
comment holding the SHA-256 of its source, so that ``--check`` can tell a current SVG from a
stale one without comparing bytes that another graphviz version would render a little
differently. ``--check`` changes nothing and exits 1 naming every diagram that is out of date.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from sota_client._store import FINAL_STATES, UpdateState

REPO = Path(__file__).resolve().parents[1]
DIAGRAMS = REPO / "docs" / "diagrams"
RELIABILITY = REPO / "docs" / "reliability.md"
STATES_DOT = "update-states.dot"

TRANSITIONS_HEADER = "| from | to | when | written in the same transaction |"
STATES_HEADER = "| state | meaning | what takes it forward |"
#: How the states table names an update the journal does not know yet: the diagram's start.
NONE = "(none)"
#: Where an update the journal does not know goes first: Core lists it as Pending, and a
#: Pending update is downloaded (daemon.md, "What happens after each event").
START_TARGET = UpdateState.DOWNLOADING.value
#: The journal's states, in UpdateState's order, and those that are final.
JOURNAL_STATES = tuple(state.value for state in UpdateState)
JOURNAL_FINAL_STATES = frozenset(state.value for state in FINAL_STATES)
#: Characters per line of an edge label.
LABEL_WIDTH = 28
#: Seconds one run of ``dot`` may take.
DOT_TIMEOUT = 60.0
#: The comment put into each SVG: the SHA-256 of the ``.dot`` it was rendered from.
HASH_COMMENT = re.compile(r"<!-- source: (?P<name>\S+) sha256 (?P<hash>[0-9a-f]{64}) -->")

__all__ = [
    "DiagramError",
    "Transition",
    "check",
    "generate",
    "main",
    "parse_transitions",
    "render",
    "short_label",
    "source_hash",
    "states_dot",
]


class DiagramError(Exception):
    """A diagram cannot be made: its sources disagree, or graphviz failed. The message says
    which file and what to change."""


@dataclass(frozen=True)
class Transition:
    """One row of the transitions table.

    ``sources`` are the states the row names in its "from" column; ``group`` is set for a row
    that starts from any state (``"any"``) or from any but some (``"any but reported"``), and
    ``excluded`` names those.
    """

    sources: tuple[str, ...]
    group: str | None
    excluded: tuple[str, ...]
    target: str
    when: str
    writes: str


# --------------------------------------------------------------------------------------------
# Reading docs/reliability.md


def _table(markdown: str, header: str, source: str) -> list[list[str]]:
    """The cells of each row of the table with this header line."""
    lines = markdown.splitlines()
    try:
        start = [line.strip() for line in lines].index(header)
    except ValueError:
        raise DiagramError(f"{source} has no table with the header {header!r}") from None
    rows = []
    for line in lines[start + 2 :]:  # after the header and its |---| line
        if not line.strip().startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))
        rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    if not rows:
        raise DiagramError(f"{source}: the table {header!r} has no rows")
    return rows


def _state_name(text: str, source: str, where: str) -> str:
    match = re.fullmatch(r"`([a-z_]+)`", text.strip())
    if match is None:
        raise DiagramError(f"{source}: {where}: {text!r} is not a state written as `name`")
    return match[1]


def _sources(
    text: str, source: str, where: str
) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
    """The "from" column: the states it names; or "any" / "any but ..." and the states left
    out."""
    if text == "any":
        return (), "any", ()
    if text.startswith("any but "):
        excluded = tuple(
            _state_name(part, source, where) for part in text.removeprefix("any but ").split(",")
        )
        return (), text, excluded
    return tuple(_state_name(part, source, where) for part in text.split(",")), None, ()


def parse_transitions(markdown: str, source: str = "docs/reliability.md") -> list[Transition]:
    """The rows of the transitions table, in order; raises :class:`DiagramError` on a row
    that is not ``| states | state | when | writes |``."""
    transitions = []
    for number, cells in enumerate(_table(markdown, TRANSITIONS_HEADER, source), 1):
        where = f"row {number} of the transitions table"
        if len(cells) != 4:
            raise DiagramError(f"{source}: {where} has {len(cells)} cells, not 4: {cells}")
        sources, group, excluded = _sources(cells[0], source, where)
        target = _state_name(cells[1], source, where)
        transitions.append(Transition(sources, group, excluded, target, cells[2], cells[3]))
    return transitions


def _state_rows(markdown: str, source: str) -> dict[str, tuple[str, str]]:
    """``state -> (meaning, what takes it forward)`` from the states table, ``(none)`` too."""
    rows = {}
    for cells in _table(markdown, STATES_HEADER, source):
        name = cells[0].strip("*")
        if name != NONE:
            name = _state_name(cells[0], source, "the states table")
        rows[name] = (cells[1], cells[2])
    return rows


# --------------------------------------------------------------------------------------------
# update-states.dot


def _plain(markdown: str) -> str:
    """Markdown cell text as plain text: links as their text, no code marks or emphasis."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    text = text.replace("`", "").replace("**", "").replace("*", "")
    return re.sub(r"\s+", " ", text).strip()


def short_label(when: str, width: int = LABEL_WIDTH) -> str:
    """The "when" of a transition for an edge: without its asides in parentheses, wrapped."""
    text = _plain(when)
    while True:  # innermost parentheses first, so nested asides go too
        shorter = re.sub(r"\s*\([^()]*\)", "", text)
        if shorter == text:
            break
        text = shorter
    return "\n".join(textwrap.wrap(text.strip(" ,;:"), width))


def _quote(text: str) -> str:
    """A DOT string: double-quoted, with quotes and backslashes escaped, newlines as \\n."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _group_node(group: str) -> str:
    return f"group: {_plain(group)}"


def _check_names(
    transitions: Sequence[Transition],
    state_rows: dict[str, tuple[str, str]],
    states: Sequence[str],
    final: Collection[str],
    source: str,
) -> None:
    known = ", ".join(states)
    for transition in transitions:
        for name in (*transition.sources, *transition.excluded, transition.target):
            if name not in states:
                raise DiagramError(
                    f"{source}: the transitions table names the state '{name}', which "
                    f"UpdateState (sota_client/_store.py) does not have; its states are {known}"
                )
    named = {
        name for transition in transitions for name in (*transition.sources, transition.target)
    }
    for name in states:
        if name not in named:
            raise DiagramError(
                f"UpdateState (sota_client/_store.py) has the state '{name}', which appears in "
                f"no transition of the table in {source}: add the rows that enter and leave it"
            )
    for name in state_rows:
        if name != NONE and name not in states:
            raise DiagramError(
                f"{source}: the states table names the state '{name}', which UpdateState "
                f"(sota_client/_store.py) does not have; its states are {known}"
            )
    for name in states:
        if name not in state_rows:
            raise DiagramError(f"{source}: the states table has no row for the state '{name}'")
    if NONE not in state_rows:
        raise DiagramError(f"{source}: the states table has no row for *{NONE}*")
    for name in final:
        if name not in states:
            raise DiagramError(f"FINAL_STATES names '{name}', which is not an UpdateState")


def states_dot(
    markdown: str,
    states: Sequence[str] = JOURNAL_STATES,
    final: Collection[str] = JOURNAL_FINAL_STATES,
    source: str = "docs/reliability.md",
) -> str:
    """The text of ``update-states.dot`` for the journal's ``states`` and the tables of
    ``markdown`` (docs/reliability.md).

    :raises DiagramError: the table names a state that ``states`` lacks, or a state of
        ``states`` is in no transition, or a table is missing or malformed.
    """
    transitions = parse_transitions(markdown, source)
    state_rows = _state_rows(markdown, source)
    _check_names(transitions, state_rows, states, final, source)
    lines = [
        "// The states of an update in the daemon's journal, and the transitions between them.",
        "// GENERATED by tools/diagrams.py (make diagrams) from UpdateState and FINAL_STATES in",
        "// sota_client/_store.py and the transitions table of docs/reliability.md: do not edit;",
        "// change those and run make diagrams again.",
        "digraph update_states {",
        '  graph [rankdir=TB, nodesep=0.45, ranksep=0.5, fontname="Helvetica", bgcolor="white",',
        '         fontsize=9, fontcolor="#3d4a58", labelloc=b,',
        '         label="Double border: a final state (FINAL_STATES). Dashed: from any state,'
        " or any but one.\\nEach edge is a row of the transitions table of docs/reliability.md"
        ' (the one from (none): of its states table); its tooltip holds the whole row."];',
        '  node [shape=box, style="rounded,filled", fillcolor="#dbe8f5", color="#1f4e79",',
        '        fontname="Helvetica", fontsize=11];',
        '  edge [color="#1f4e79", fontcolor="#1f2d3d", fontname="Helvetica", fontsize=9,',
        "        arrowsize=0.7];",
        "",
        "  // Where every update starts: the journal does not know it yet.",
        f'  {_quote(NONE)} [shape=circle, style=filled, fillcolor="#1f4e79", fontcolor=white,'
        f" fontsize=9, tooltip={_quote(_plain(state_rows[NONE][0]))}];",
        "",
        "  // The states, in UpdateState's order; the final ones (FINAL_STATES) with a double",
        "  // border.",
    ]
    for name in states:
        meaning = _plain(state_rows[name][0])
        if name in final:
            attributes = (
                f'label={_quote(name + chr(10) + "(final)")}, peripheries=2, fillcolor="#d9ead3",'
                f' color="#38761d"'
            )
        else:
            attributes = f"label={_quote(name)}"
        lines.append(f"  {_quote(name)} [{attributes}, tooltip={_quote(meaning)}];")
    finals = [name for name in states if name in final]
    if finals:
        lines.append("  {rank=max; " + " ".join(f"{_quote(name)};" for name in finals) + "}")
    groups = sorted({t.group for t in transitions if t.group is not None})
    if groups:
        lines += ["", "  // Rows whose transition may start from (almost) any state."]
    for group in groups:
        label = "any state" + group.removeprefix("any")
        lines.append(
            f"  {_quote(_group_node(group))} [label={_quote(_plain(label))}, "
            'style="rounded,dashed", fillcolor=none, color="#6d7a88", fontcolor="#3d4a58"];'
        )
    lines += ["", "  // The transitions, in the table's order; each tooltip is the whole row."]
    forward = short_label(state_rows[NONE][1].split(":")[0])
    lines.append(
        f"  {_quote(NONE)} -> {_quote(START_TARGET)} [label={_quote(forward)}, "
        f"tooltip={_quote(_plain(state_rows[NONE][1]))}];"
    )
    for transition in transitions:
        tails = transition.sources or (_group_node(transition.group or ""),)
        tooltip = _plain(transition.when)
        if transition.writes:
            tooltip += f". Written with it: {_plain(transition.writes)}"
        for tail in tails:
            style = ', style=dashed, color="#6d7a88"' if transition.group else ""
            lines.append(
                f"  {_quote(tail)} -> {_quote(transition.target)} "
                f"[label={_quote(short_label(transition.when))}, tooltip={_quote(tooltip)}"
                f"{style}];"
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Rendering and checking


def _dot_program() -> str:
    program = shutil.which("dot")
    if program is None:
        raise DiagramError("graphviz's dot is not installed (Debian: apt-get install graphviz)")
    return program


def source_hash(dot: Path) -> str:
    """The hex SHA-256 of a diagram's source, as its SVG's comment carries it."""
    return hashlib.sha256(dot.read_bytes()).hexdigest()


def render(dot: Path) -> str:
    """The SVG of ``dot`` as ``dot -Tsvg`` draws it, with the comment carrying its source's
    SHA-256 after the XML declaration.

    :raises DiagramError: graphviz is missing or refuses the file (its message included).
    """
    try:
        result = subprocess.run(
            [_dot_program(), "-Tsvg", str(dot)],
            capture_output=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DiagramError(
            f"{_shown(dot)}: dot did not finish within {DOT_TIMEOUT:.0f} s"
        ) from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        raise DiagramError(f"{_shown(dot)} does not render: {message}")
    svg = result.stdout.decode()
    comment = f"<!-- source: {dot.name} sha256 {source_hash(dot)} -->\n"
    declaration, newline, rest = svg.partition("\n")
    if declaration.startswith("<?xml") and newline:
        return declaration + newline + comment + rest
    return comment + svg


def _shown(path: Path) -> str:
    """A path as messages show it: relative to the checkout when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def generate(diagrams: Path = DIAGRAMS, reliability: Path = RELIABILITY) -> list[Path]:
    """Write ``update-states.dot`` and render every ``.dot`` of ``diagrams`` to its ``.svg``.

    :returns: the files written.
    :raises DiagramError: as :func:`states_dot` and :func:`render`; nothing is written then.
    """
    states = diagrams / STATES_DOT
    text = states_dot(reliability.read_text(), source=_shown(reliability))
    written = []
    if not states.exists() or states.read_text() != text:
        states.write_text(text)
        written.append(states)
    svgs = {dot.with_suffix(".svg"): render(dot) for dot in sorted(diagrams.glob("*.dot"))}
    for svg, content in svgs.items():
        svg.write_text(content)
        written.append(svg)
    return written


def check(diagrams: Path = DIAGRAMS, reliability: Path = RELIABILITY) -> list[str]:
    """What is out of date in ``diagrams``, one message each; empty when everything is current.

    (a) ``update-states.dot`` is what :func:`states_dot` makes of the sources now; (b) every
    ``.svg`` carries the SHA-256 of its ``.dot`` as it is now; (c) every ``.dot`` renders.
    """
    problems = []
    states = diagrams / STATES_DOT
    try:
        expected = states_dot(reliability.read_text(), source=_shown(reliability))
    except DiagramError as exc:
        problems.append(str(exc))
    else:
        if not states.exists():
            problems.append(f"{_shown(states)} is missing: run make diagrams")
        elif states.read_text() != expected:
            problems.append(
                f"{_shown(states)} is out of date: it differs from what tools/diagrams.py makes "
                f"of {_shown(reliability)} and sota_client/_store.py; run make diagrams"
            )
    for dot in sorted(diagrams.glob("*.dot")):
        svg = dot.with_suffix(".svg")
        if not svg.exists():
            problems.append(f"{_shown(svg)} is missing: run make diagrams")
        else:
            match = HASH_COMMENT.search(svg.read_text())
            if match is None or match["name"] != dot.name:
                problems.append(
                    f"{_shown(svg)} has no sha256 comment for {dot.name}: run make diagrams"
                )
            elif match["hash"] != source_hash(dot):
                problems.append(
                    f"{_shown(svg)} is out of date: it was rendered from another version of "
                    f"{dot.name}; run make diagrams"
                )
        try:
            render(dot)
        except DiagramError as exc:
            problems.append(str(exc))
    if not any(diagrams.glob("*.dot")):
        problems.append(f"{_shown(diagrams)} holds no .dot file")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.diagrams", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 naming every diagram that is out of date",
    )
    parser.add_argument(
        "--dir", type=Path, default=DIAGRAMS, help="the diagrams (default: docs/diagrams)"
    )
    parser.add_argument(
        "--reliability",
        type=Path,
        default=RELIABILITY,
        help="the page with the transitions table (default: docs/reliability.md)",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.dir, args.reliability)
        for problem in problems:
            print(f"diagrams: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"diagrams: {_shown(args.dir)} is up to date", file=sys.stderr)
        return 0
    try:
        written = generate(args.dir, args.reliability)
    except DiagramError as exc:
        print(f"diagrams: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(_shown(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
