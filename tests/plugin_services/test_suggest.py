"""The one did-you-mean of the connector API."""

from __future__ import annotations

from integration_bus.connector import closest, did_you_mean


def test_the_nearest_choice_is_suggested() -> None:
    assert closest("retyr", ["retry", "to", "from"]) == "did you mean 'retry'?"
    assert did_you_mean("jsnol", ["log", "jsonl"]) == "did you mean 'jsonl'?"


def test_a_difference_of_case_alone_is_found() -> None:
    assert closest("SKU", ["sku", "quantity"]) == "did you mean 'sku'?"


def test_two_choices_exactly_as_close_are_both_named() -> None:
    assert closest("colour", ["colour_a", "colour_b", "size"]) == \
        "did you mean 'colour_a' or 'colour_b'?"


def test_a_closer_first_choice_stands_alone() -> None:
    assert closest("DocumentNumbr", ["DocumentNumber", "DocumentType"]) == \
        "did you mean 'DocumentNumber'?"


def test_nothing_close_lists_the_choices_or_says_there_are_none() -> None:
    assert closest("zzz", ["alpha", "beta"]) is None
    assert did_you_mean("zzz", ["beta", "alpha"]) == "one of: alpha, beta"
    assert did_you_mean("zzz", []) == "none are defined"
