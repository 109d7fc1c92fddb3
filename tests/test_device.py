"""The DeepH device grammar: examples from DeepH's docs, every error, and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpc_sweep.sweep.device import (
    DEVICE_TYPES,
    Device,
    DeviceError,
    allocation_view,
    compress_ids,
    format_device,
    parse_device,
    resource_name,
    visible_devices,
)

# --- the examples DeepH's own material uses --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, device, count, view",
    [
        ("gpu*8:1-4,7", Device("gpu", 8, (1, 2, 3, 4, 7)), 5, "gpu*5"),
        ("gpu*3", Device("gpu", 3), 3, "gpu*3"),
        ("gpu*8:0", Device("gpu", 8, (0,)), 1, "gpu*1"),
        ("gpu*1", Device("gpu", 1), 1, "gpu*1"),
        ("gpu", Device("gpu"), 1, "gpu*1"),
        ("cpu", Device("cpu"), 1, "cpu"),
        ("cpu*4", Device("cpu", 4), 4, "cpu*4"),
        ("dcu*4:0-1", Device("dcu", 4, (0, 1)), 2, "dcu*2"),
        ("cuda*2:1,0", Device("cuda", 2, (1, 0)), 2, "cuda*2"),
    ],
)
def test_documented_examples(text: str, device: Device, count: int, view: str) -> None:
    parsed = parse_device(text)
    assert parsed == device
    assert parsed.count == count
    assert allocation_view(parsed) == view
    assert format_device(parsed) == text


def test_cpu_selects_no_accelerator() -> None:
    assert parse_device("cpu").accelerators == 0
    assert parse_device("cpu*4").accelerators == 0
    assert not parse_device("cpu").is_accelerator
    assert parse_device("gpu*8:1-4,7").accelerators == 5
    assert parse_device("rocm*2").is_accelerator


def test_outer_whitespace_is_stripped() -> None:
    assert parse_device("  gpu*8:0\n") == Device("gpu", 8, (0,))


def test_canonical_form_compresses_ranges() -> None:
    assert format_device(parse_device("gpu*8:1,2,3,4,7")) == "gpu*8:1-4,7"
    assert format_device(parse_device("gpu*8:3-3")) == "gpu*8:3"
    assert format_device(parse_device("gpu*08:01")) == "gpu*8:1"
    assert compress_ids([5, 6, 0, 1, 2]) == "5-6,0-2"  # order kept: the first id may be the head device


def test_resource_names_default_and_site_override() -> None:
    assert resource_name(parse_device("gpu*2")) == "gpu"
    assert resource_name(parse_device("cuda*2")) == "gpu"
    assert resource_name(parse_device("dcu*4")) == "dcu"
    assert resource_name(parse_device("rocm*4")) == "gpu"
    assert resource_name(parse_device("rocm*4"), {"rocm": "amd"}) == "amd"
    assert resource_name(parse_device("cpu")) is None


def test_visible_devices_for_local_runs() -> None:
    assert visible_devices(parse_device("gpu*8:1-4,7")) == "1,2,3,4,7"
    assert visible_devices(parse_device("gpu*3")) is None
    assert visible_devices(parse_device("cpu*2")) is None


# --- every error names the bad part and the fix ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, must_say",
    [
        ("gpu*8:9", ["id 9 is out of range 0-7", "raise the count"]),
        ("gpu*8:2-8", ["id 8 is out of range 0-7"]),
        ("gpu*0", ["count 0", "'gpu*1'", "'cpu'"]),
        ("gpu*8:4-1", ["'4-1'", "reversed", "'1-4'"]),
        ("gpu*8:1,1", ["id 1 selected more than once", "'gpu*8:1'"]),
        ("gpu*8:1-3,2-4", ["ids 2, 3 selected more than once", "overlapping", "'gpu*8:1-4'"]),
        ("gpx*2", ["unknown device type 'gpx'", "did you mean 'gpu'"]),
        ("zzzz*2", ["unknown device type 'zzzz'", "cpu, gpu, cuda, rocm, dcu, tpu"]),
        ("GPU*2", ["lowercase", "'gpu'"]),
        ("gpu*8:1x", ["'1x'", "range like '1-4'"]),
        ("gpu*8:1-", ["'1-'"]),
        ("gpu*8:1:2", ["'1:2'"]),
        ("gpu*8x", ["'8x'", "not a whole number"]),
        ("gpu*2*3", ["'2*3'"]),
        ("", ["empty", "'gpu*1'"]),
        ("   ", ["empty"]),
        ("gpu*-1", ["negative", "'gpu*1'"]),
        ("gpu*8:-1", ["'-1'", "negative"]),
        ("gpu * 8", ["spaces inside", "'gpu*8'"]),
        ("gpu*8: 1", ["spaces inside", "'gpu*8:1'"]),
        ("gpu:0", ["without a count", "'gpu*N:0'"]),
        ("gpu*", ["no count after '*'"]),
        ("gpu*8:", ["no ids after ':'"]),
        ("gpu*8:1,,2", ["empty id between commas"]),
        ("*8", ["no type"]),
    ],
)
def test_errors_name_the_part_and_the_fix(text: str, must_say: list[str]) -> None:
    with pytest.raises(DeviceError) as caught:
        parse_device(text)
    message = str(caught.value)
    for fragment in must_say:
        assert fragment in message, message
    assert "\n" not in message


def test_error_is_a_value_error_and_non_strings_are_refused() -> None:
    assert issubclass(DeviceError, ValueError)
    with pytest.raises(DeviceError, match="must be a string"):
        parse_device(8)
    with pytest.raises(DeviceError, match="must be a string"):
        parse_device(None)


# --- properties ------------------------------------------------------------------------------------------------


@st.composite
def devices(draw: st.DrawFn) -> Device:
    dtype = draw(st.sampled_from(DEVICE_TYPES))
    num = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=64)))
    if num is None or not draw(st.booleans()):
        return Device(dtype, num)
    ids = draw(st.lists(st.integers(min_value=0, max_value=num - 1), min_size=1, max_size=num, unique=True))
    return Device(dtype, num, tuple(ids))


@given(devices())
def test_format_then_parse_is_identity(dev: Device) -> None:
    assert parse_device(format_device(dev)) == dev


@given(devices())
def test_canonical_text_is_a_fixed_point(dev: Device) -> None:
    text = format_device(dev)
    assert format_device(parse_device(text)) == text


@given(devices())
def test_count_invariants(dev: Device) -> None:
    if dev.ids is not None:
        assert dev.count == len(dev.ids) <= dev.num
    elif dev.num is not None:
        assert dev.count == dev.num
    else:
        assert dev.count == 1
    assert dev.count >= 1
    assert dev.accelerators == (0 if dev.type == "cpu" else dev.count)


@given(devices())
def test_allocation_view_keeps_the_count_and_drops_ids(dev: Device) -> None:
    view = parse_device(allocation_view(dev))
    assert view.count == dev.count
    assert view.type == dev.type
    if dev.is_accelerator:
        assert view.ids is None
        assert view.num == dev.count


@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30, unique=True))
def test_compressed_ids_expand_back_in_order(ids: list[int]) -> None:
    dev = parse_device(f"gpu*41:{compress_ids(ids)}")
    assert dev.ids == tuple(ids)


@given(st.text(max_size=12))
def test_arbitrary_text_parses_or_raises_device_error(text: str) -> None:
    try:
        dev = parse_device(text)
    except DeviceError:
        return
    assert parse_device(format_device(dev)) == dev
