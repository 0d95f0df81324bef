"""``Closing``: an object that holds something closes it when a ``with`` block ends, however it ends."""

from __future__ import annotations

import pytest

from alliance_fhir._closing import Closing


class Held(Closing):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_with_gives_the_object_itself_and_closes_it_once_at_the_end():
    with Held() as held:
        assert held.closed == 0
    assert isinstance(held, Held)
    assert held.closed == 1


def test_it_is_closed_when_the_block_raises_and_the_error_goes_on():
    held = Held()
    with pytest.raises(ValueError, match="inside"), held:
        raise ValueError("inside")
    assert held.closed == 1


def test_a_class_without_close_cannot_be_made():
    class Forgot(Closing):  # type: ignore[misc]
        pass

    with pytest.raises(TypeError, match="close"):
        Forgot()  # type: ignore[abstract]
