"""The plugin author's own tests: inherit the harness's selector contract."""

from harness.testing import SelectorContract
from pairsel_lengthgap import LengthGapSelector


class TestLengthGapContract(SelectorContract):
    selector_class = LengthGapSelector
