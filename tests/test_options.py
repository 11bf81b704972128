import pytest

from harness.errors import UnknownNameError, UsageError
from harness.options import Option, parse_bool, parse_float_list, resolve_options

BETA = Option("beta", float, 1.0, "DPO beta", min=0, min_inclusive=False)
SPECS = (
    BETA,
    Option("epochs", int, 8, "epochs", min=0),
    Option("normalize", bool, False, "length-normalise"),
    Option("reference", str, "fixed", "reference", choices=("fixed", "previous")),
    Option("weights", tuple, None, "weights", min=0, min_inclusive=False),
)


def test_defaults_filled_and_strings_parsed():
    values = resolve_options(SPECS, {"beta": "0.5", "epochs": "3", "normalize": "yes", "weights": "1,2,3"}, "x")
    assert values == {"beta": 0.5, "epochs": 3, "normalize": True, "reference": "fixed", "weights": (1.0, 2.0, 3.0)}


def test_unknown_option_lists_close_matches():
    with pytest.raises(UnknownNameError) as info:
        resolve_options(SPECS, {"bta": "1"}, "trainer 'native'")
    assert "did you mean 'beta'" in str(info.value)


@pytest.mark.parametrize(
    "given, fragment",
    [
        ({"beta": "0"}, "must be in (0, inf)"),
        ({"beta": "-1"}, "got -1"),
        ({"beta": "nan"}, "must be in"),
        ({"epochs": "2.5"}, "expects int"),
        ({"normalize": "maybe"}, "expects bool"),
        ({"reference": "moving"}, "one of fixed, previous"),
        ({"weights": "1,0"}, "must be in (0, inf)"),
        ({"weights": ""}, "expects list of numbers"),
    ],
)
def test_bad_values_name_the_range(given, fragment):
    with pytest.raises(UsageError) as info:
        resolve_options(SPECS, given, "trainer 'native'")
    assert fragment in str(info.value)
    assert "trainer 'native'" in str(info.value)


def test_bool_rejected_for_int_and_python_values_accepted():
    with pytest.raises(UsageError):
        resolve_options(SPECS, {"epochs": True}, "x")
    assert resolve_options(SPECS, {"epochs": 4.0, "beta": 2}, "x")["epochs"] == 4
    assert isinstance(resolve_options(SPECS, {"beta": 2}, "x")["beta"], float)


def test_parsers():
    assert parse_bool("ON") is True and parse_bool("0") is False
    assert parse_float_list("1:2:3") == (1.0, 2.0, 3.0)
    assert BETA.range_text() == "(0, inf)"
