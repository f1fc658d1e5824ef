"""The recipe pages and the recipe tests agree, without running the recipes (they need Spark, Flink and
Java: `make recipes-test`): every block a recipe test asks for is on a page of docs/recipes, in the
language it is asked for, and every Python, Java or XML block of those pages is a recipe some test
runs, so no code is shown that is not tested."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.recipes import readme

TESTS = Path(readme.__file__).parent
CODE_BLOCK = re.compile(r"^```(\w+)\n", re.M)


def _parametrized(function: ast.FunctionDef) -> dict[str, set[str]]:
    """argument name -> the strings pytest.mark.parametrize gives it."""
    values: dict[str, set[str]] = {}
    for decorator in function.decorator_list:
        if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.parametrize"):
            continue
        names_node, cases_node = decorator.args[:2]
        names = ast.literal_eval(names_node)
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        for case in ast.literal_eval(cases_node):
            row = case if isinstance(case, tuple) else (case,)
            for name, value in zip(names, row, strict=True):
                if isinstance(value, str):
                    values.setdefault(name, set()).add(value)
    return values


def _calls(node: ast.AST, params: dict[str, set[str]]) -> set[tuple[str, str]]:
    asked: set[tuple[str, str]] = set()
    for call in ast.walk(node):
        if not (isinstance(call, ast.Call) and ast.unparse(call.func) in ("readme.recipe", "readme.block")):
            continue
        if ast.unparse(call.func) == "readme.block":
            names_given, language = [call.args[0]], ast.literal_eval(call.args[1])
        else:
            names_given, language = list(call.args), "python"
        for arg in names_given:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                asked.add((arg.value, language))
            elif isinstance(arg, ast.Name):
                assert arg.id in params, f"{ast.unparse(call)}: {arg.id} is not a parametrized argument"
                asked |= {(v, language) for v in params[arg.id]}
            else:
                raise AssertionError(f"{ast.unparse(call)}: name the recipe with a string literal")
    return asked


def asked_for(source: str) -> set[tuple[str, str]]:
    """(name, language) of every block a test module asks `readme` for: readme.recipe(...) takes Python
    blocks, readme.block(name, language) one of that language; a name may come from a parametrize."""
    asked: set[tuple[str, str]] = set()
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.FunctionDef):
            asked |= _calls(statement, _parametrized(statement))
        else:
            asked |= _calls(statement, {})
    return asked


def _all_asked() -> set[tuple[str, str]]:
    return set().union(*(asked_for(p.read_text()) for p in sorted(TESTS.glob("test_*.py"))))


def test_every_recipe_a_test_asks_for_is_on_a_page_in_its_language():
    asked = _all_asked()
    blocks = readme.blocks()
    assert {n for n, _ in asked} >= {"python-reader", "spark-reader", "flink-registry", "java-reader"}, asked
    missing = sorted(n for n, _ in asked if n not in blocks)
    assert not missing, f"the recipe tests ask for blocks docs/recipes does not have: {missing}"
    wrong = sorted((n, lang, blocks[n][0]) for n, lang in asked if blocks[n][0] != lang)
    assert not wrong, f"(name, asked for, on the page): {wrong}"


def test_every_code_block_of_the_recipe_pages_is_a_recipe_a_test_runs():
    blocks = readme.blocks()
    asked = {n for n, _ in _all_asked()}
    assert set(blocks) == asked, f"on a page but run by no test: {sorted(set(blocks) - asked)}"
    for page in readme.pages():
        code = [m.group(1) for m in CODE_BLOCK.finditer(page.read_text()) if m.group(1) in ("python", "java", "xml")]
        marked = [lang for _, lang, _ in readme.MARKER.findall(page.read_text())]
        assert len(code) == len(marked), f"{page.name}: {len(code) - len(marked)} code block(s) without a recipe marker"


def test_the_extraction_refuses_a_missing_block_and_a_wrong_language():
    with pytest.raises(AssertionError, match="has no block marked <!-- recipe: no-such-recipe -->"):
        readme.block("no-such-recipe", "python")
    with pytest.raises(AssertionError, match="recipe java-pom is xml, not python"):
        readme.block("java-pom", "python")


def test_asked_for_reads_literals_and_parametrized_names():
    source = """
import pytest
@pytest.mark.parametrize(("mode", "decoder"), [("a", "dec-a"), ("b", "dec-b")])
def test_x(mode, decoder):
    readme.recipe(decoder, "reader")
    readme.block("pom", "xml")
"""
    assert asked_for(source) == {("dec-a", "python"), ("dec-b", "python"), ("reader", "python"), ("pom", "xml")}
