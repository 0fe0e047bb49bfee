"""The code stays readable: no function in src/ longer than one screen (60 lines)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LONGEST = 60


def long_functions() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST:
                    out.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines})")
    return out


def test_no_function_is_longer_than_a_screen():
    assert long_functions() == []
