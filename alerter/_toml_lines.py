"""Find the line of a key in TOML text, for error messages.

tomllib returns plain dicts without positions, so this scans the text
line by line. It understands table headers, arrays of tables, bare,
quoted and dotted keys. Keys inside inline tables and multi-line arrays
map to the line where their outer key starts.
"""

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each table and key path to its 1-based line number.

    Array-of-tables entries get their index as a path element, so the key
    `name` in the second `[[routes]]` is `("routes", "1", "name")`.
    """
    lines: dict[tuple[str, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            path = _split(header.group(2))
            if header.group(1) == "[[":
                counts[path] = counts.get(path, 0) + 1
            table = _indexed(path, counts)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, *_split(key.group(1))), number)
    return lines


def line_of(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """Return the line of `path`, or of its longest prefix that has one."""
    for end in range(len(path), 0, -1):
        number = lines.get(path[:end])
        if number is not None:
            return number
    return None


def _indexed(
    path: tuple[str, ...], counts: dict[tuple[str, ...], int]
) -> tuple[str, ...]:
    """Insert the current array index after each prefix that is an array of tables."""
    result: list[str] = []
    for end in range(1, len(path) + 1):
        result.append(path[end - 1])
        count = counts.get(path[:end])
        if count:
            result.append(str(count - 1))
    return tuple(result)


def _split(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", dotted)
    return tuple(part.strip("\"'") for part in parts)
