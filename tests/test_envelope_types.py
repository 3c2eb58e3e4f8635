"""Message types are checked whole, also on the second look (check_type remembers good ones)."""

from __future__ import annotations

from typing import Any

import pytest

from integration_bus.envelope import Envelope, check_type
from integration_bus.errors import EnvelopeError


@pytest.mark.parametrize("bad", ["order.created\n", "order.created\nx", "Order.created", "a..b",
                                 "", ".a", "a b", ["order.created"], None, 7])
def test_a_bad_type_is_refused_every_time(bad: Any) -> None:
    check_type("order.created")  # a good one remembered first changes nothing for the bad
    for _ in range(2):
        with pytest.raises(EnvelopeError) as caught:
            check_type(bad)
        assert caught.value.context["field"] == "type"


def test_a_good_type_passes_every_time() -> None:
    assert check_type("pos.sale_line") == check_type("pos.sale_line") == "pos.sale_line"
    assert Envelope.create("pos.sale_line", {}, source="t").type == "pos.sale_line"
    with pytest.raises(EnvelopeError):
        Envelope.create("pos.sale_line\n", {}, source="t")
