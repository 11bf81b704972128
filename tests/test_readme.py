"""The README stays true: its test command is what CI runs, and it documents every hook."""

import re
from pathlib import Path

from harness import hookspecs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def setup_commands():
    section = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert commands[0].endswith("harness run --selector smallest --allocator decrease")
    assert commands[0].startswith("python3 -m venv .venv") and "pip install torch==2.13.0 &&" in commands[0]


def test_ci_runs_the_readme_test_command_verbatim():
    assert setup_commands()[1] + " || status=$?" in CI


def test_every_hook_is_documented_with_its_arguments():
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert len(hooks) == 8
    for name in hooks:
        function = getattr(hookspecs, name)
        arguments = ", ".join(function.__code__.co_varnames[: function.__code__.co_argcount])
        assert f"`{name}({arguments})`" in README, name


def test_tutorial_code_is_the_example_plugin():
    source = (ROOT / "tests" / "example_plugin" / "pairsel_lengthgap" / "__init__.py").read_text()
    tutorial = README.split("**2. Write the selector", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert tutorial.strip() in source
    contract = README.split("**4. Test it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert contract.strip() in (ROOT / "tests" / "example_plugin" / "test_lengthgap.py").read_text()


def test_reliability_section_is_generated_and_lost_nothing():
    section = README.split("<!-- reliability:start -->", 1)[1].split("<!-- reliability:end -->", 1)[0]
    assert "python scripts/reliability.py" in section and "rows lost: 0." in section
    assert re.search(r"\*\*[\d,]+ bad inputs tried", section)
