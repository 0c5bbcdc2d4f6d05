"""Benchmark rows of docs/performance.md's table, written by the benchmark that measured them.

Each benchmark script given `--update-docs` replaces its own row (the one whose first cell is its
`what`) between the `<!-- benchmarks:start -->` and `<!-- benchmarks:end -->` markers, so that no
measured number in that table is typed by hand.
"""
import shlex
import sys
from pathlib import Path

from cli import REPO_ROOT, UserError, write_text_atomic

PERFORMANCE_DOC = REPO_ROOT / "docs" / "performance.md"
MARKERS = ("<!-- benchmarks:start -->", "<!-- benchmarks:end -->")
FLAG = "--update-docs"
FLAG_HELP = "write the measured row into docs/performance.md's table"


def command_line():
    """The command as it was run, e.g. `python benchmarks/bench_snn.py --repeats 3` (without --update-docs)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    return " ".join(["python", str(script), *(shlex.quote(arg) for arg in sys.argv[1:] if arg != FLAG)])


def update_row(what, measured, target, doc=PERFORMANCE_DOC):
    """Replace the table row `| what | ... |` with `| what | `command` | measured | target |`."""
    text = Path(doc).read_text()
    start, end = MARKERS
    if start not in text or end not in text:
        raise UserError(f"{doc}: no {start} ... {end} block to update")
    before, rest = text.split(start, 1)
    block, after = rest.split(end, 1)
    row = f"| {what} | `{command_line()}` | {measured} | {target} |"
    lines = block.split("\n")
    matches = [index for index, line in enumerate(lines) if line.startswith(f"| {what} |")]
    if matches:
        lines[matches[0]] = row
    else:  # a new row, after the table's last row
        last = max(index for index, line in enumerate(lines) if line.startswith("|"))
        lines.insert(last + 1, row)
    write_text_atomic(doc, before + start + "\n".join(lines) + end + after)
    print(f"updated the '{what}' row of {doc}")
