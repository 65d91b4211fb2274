"""The diagrams of docs/diagrams/ are current, and tools/diagrams.py refuses sources that disagree.

Every test that changes a file works on copies in ``tmp_path``; the real files are only read.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sota_client._store import FINAL_STATES, UpdateState
from tools import diagrams
from tools.diagrams import DiagramError, check, parse_transitions, states_dot

REPO = Path(__file__).parents[1]
RELIABILITY = REPO / "docs" / "reliability.md"
DIAGRAMS = REPO / "docs" / "diagrams"
STATES = tuple(state.value for state in UpdateState)
#: A row of the transitions table, as docs/reliability.md has it.
DELIVERED_ROW = "| `downloaded` | `delivered` | the SWLM accepted the event |"

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is missing")


def reliability_text() -> str:
    return RELIABILITY.read_text()


@pytest.fixture
def copies(tmp_path: Path) -> Path:
    """docs/diagrams and docs/reliability.md copied into ``tmp_path``."""
    shutil.copytree(DIAGRAMS, tmp_path / "diagrams")
    shutil.copy(RELIABILITY, tmp_path / "reliability.md")
    return tmp_path


@needs_dot
def test_the_committed_diagrams_are_up_to_date() -> None:
    assert check() == []


@needs_dot
def test_the_check_command_passes_on_the_committed_diagrams() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.diagrams", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr


def test_the_table_is_read_as_the_doc_writes_it() -> None:
    transitions = parse_transitions(reliability_text())
    assert DELIVERED_ROW in reliability_text()
    delivered = [t for t in transitions if t.target == "delivered"]
    assert [(t.sources, t.group, t.when) for t in delivered] == [
        (("downloaded",), None, "the SWLM accepted the event")
    ]
    [report] = [t for t in transitions if t.group is not None and t.target == "report_pending"]
    assert report.excluded == ("reported",)
    both = [t for t in transitions if len(t.sources) > 1]
    assert [t.sources for t in both] == [("downloaded", "installing"), ("downloaded", "delivered")]


def test_the_states_diagram_has_every_state_the_start_and_the_final_marks() -> None:
    dot = states_dot(reliability_text())
    for state in STATES:
        assert f'"{state}" [' in dot
    assert '"(none)" -> "downloading"' in dot
    for state in FINAL_STATES:
        assert f'"{state.value}" [label="{state.value}\\n(final)", peripheries=2' in dot
    for state in set(UpdateState) - FINAL_STATES:
        assert f'"{state.value}" [label="{state.value}", tooltip=' in dot
    # "any" rows are drawn from one dashed node each, not from every state.
    assert '"group: any" -> "set_aside"' in dot
    assert '"group: any but reported" -> "report_pending"' in dot
    # Long labels are wrapped.
    labels = [line for line in dot.splitlines() if "-> " in line]
    assert any("\\n" in line.split("label=")[1].split(", tooltip")[0] for line in labels)


def test_a_table_naming_an_unknown_state_fails_naming_it() -> None:
    text = reliability_text().replace(
        DELIVERED_ROW, "| `downloaded` | `handed_over` | the SWLM accepted the event |"
    )
    with pytest.raises(DiagramError, match="'handed_over'") as raised:
        states_dot(text)
    assert "UpdateState" in str(raised.value)


def test_an_unknown_state_in_any_but_fails_too() -> None:
    text = reliability_text().replace("| any but `reported` |", "| any but `acknowledged` |")
    with pytest.raises(DiagramError, match="'acknowledged'"):
        states_dot(text)


def test_an_enum_state_in_no_transition_fails_naming_it() -> None:
    with pytest.raises(DiagramError, match="'quarantined'") as raised:
        states_dot(reliability_text(), states=(*STATES, "quarantined"))
    assert "no transition" in str(raised.value)


def test_a_state_whose_rows_are_gone_fails() -> None:
    """Removing the only rows that name `delivered` makes the enum's state unaccounted for."""
    lines = [
        line
        for line in reliability_text().splitlines()
        if not (
            line.startswith("| `delivered` |")
            or line.startswith("| `downloaded` | `deliv")
            or line.startswith("| `downloaded`, `delivered` |")
        )
    ]
    with pytest.raises(DiagramError, match=r"'delivered'.*no transition"):
        states_dot("\n".join(lines))


def test_a_missing_table_fails_with_its_header() -> None:
    with pytest.raises(DiagramError, match="no table with the header"):
        states_dot("# Reliability\n\nNo tables here.\n")


@needs_dot
def test_an_edited_dot_makes_its_svg_out_of_date(copies: Path) -> None:
    journey = copies / "diagrams" / "update-journey.dot"
    journey.write_text(journey.read_text().replace("every polling_sec", "every poll"))
    problems = check(copies / "diagrams", copies / "reliability.md")
    assert len(problems) == 1
    assert "update-journey.svg is out of date" in problems[0]
    # The command says so and fails; regenerating makes it current again.
    args = ["--dir", str(copies / "diagrams"), "--reliability", str(copies / "reliability.md")]
    assert diagrams.main(["--check", *args]) == 1
    assert diagrams.main(args) == 0
    assert check(copies / "diagrams", copies / "reliability.md") == []
    assert "every poll" in (copies / "diagrams" / "update-journey.svg").read_text()


@needs_dot
def test_an_svg_from_another_graphviz_with_the_right_hash_is_current(copies: Path) -> None:
    """Only the source's hash counts, not the bytes dot wrote."""
    svg = copies / "diagrams" / "update-states.svg"
    svg.write_text(svg.read_text().replace("Generated by graphviz version", "Made by graphviz"))
    assert check(copies / "diagrams", copies / "reliability.md") == []
    svg.write_text(svg.read_text().replace("<!-- source: ", "<!-- "))
    [problem] = check(copies / "diagrams", copies / "reliability.md")
    assert "update-states.svg has no sha256 comment" in problem


@needs_dot
def test_a_changed_table_makes_the_states_dot_out_of_date(copies: Path) -> None:
    reliability = copies / "reliability.md"
    reliability.write_text(
        reliability.read_text().replace(
            "the SWLM accepted the event |", "the SWLM took the event |", 1
        )
    )
    [problem] = check(copies / "diagrams", reliability)
    assert "update-states.dot is out of date" in problem
    # A table the generator refuses is reported by the check as well.
    reliability.write_text(reliability.read_text().replace("| `delivered` |", "| `handed` |", 1))
    problems = check(copies / "diagrams", reliability)
    assert any("'handed'" in problem for problem in problems)


@needs_dot
def test_a_dot_that_does_not_render_is_reported(copies: Path) -> None:
    broken = copies / "diagrams" / "update-journey.dot"
    broken.write_text(broken.read_text().replace("digraph update_journey {", "digraph {{", 1))
    problems = check(copies / "diagrams", copies / "reliability.md")
    assert any("update-journey.dot does not render" in problem for problem in problems)
    with pytest.raises(DiagramError, match="does not render"):
        diagrams.render(broken)


@needs_dot
def test_the_svg_carries_the_hash_of_its_source() -> None:
    dot = DIAGRAMS / "update-states.dot"
    svg = diagrams.render(dot)
    assert svg.startswith("<?xml")
    match = diagrams.HASH_COMMENT.search(svg)
    assert match is not None
    assert match["name"] == "update-states.dot"
    assert match["hash"] == diagrams.source_hash(dot)
    assert "<svg" in svg
