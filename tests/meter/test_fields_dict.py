"""fields_dict and only_types, the journal's record helpers (kraken/meter/journal.py), in C
(kraken/csrc/fields.c) and Python: the same dict, the same refusals."""
from __future__ import annotations

import pytest

from kraken.meter.journal import fields_dict_c, fields_dict_py, only_types_c, only_types_py
from kraken.store.record import FIELD_NAMES, RequestRecord

VERSIONS = [fields_dict_py] + ([fields_dict_c] if fields_dict_c is not None else [])


def test_the_c_version_is_built_where_the_tests_run():
    assert fields_dict_c is not None  # tools/test builds the extension


@pytest.mark.parametrize("fields_dict", VERSIONS)
def test_a_record_becomes_its_fields_by_name_in_order(fields_dict):
    values = tuple(None if i % 3 == 0 else f"v{i}" if i % 3 == 1 else i for i in range(len(FIELD_NAMES)))
    rec = RequestRecord(*values)
    got = fields_dict(FIELD_NAMES, rec)
    assert got == rec._asdict()
    assert list(got) == list(FIELD_NAMES)
    assert all(got[name] is value for name, value in zip(FIELD_NAMES, values))


@pytest.mark.parametrize("fields_dict", VERSIONS)
def test_as_zip_the_shorter_tuple_decides(fields_dict):
    assert fields_dict(("a", "b", "c"), (1, 2)) == {"a": 1, "b": 2}
    assert fields_dict(("a",), (1, 2)) == {"a": 1}
    assert fields_dict((), ()) == {}
    assert fields_dict(("a", "a"), (1, 2)) == {"a": 2}  # a repeated name: the last value


@pytest.mark.parametrize("fields_dict", VERSIONS)
def test_an_unhashable_name_is_refused(fields_dict):
    with pytest.raises(TypeError):
        fields_dict(([],), (1,))


def test_the_c_version_takes_two_tuples_only():
    if fields_dict_c is None:
        pytest.fail("extension not built")
    for args in ((["a"], (1,)), (("a",), [1]), (("a",),), ()):
        with pytest.raises(TypeError):
            fields_dict_c(*args)


TYPE_VERSIONS = [only_types_py] + ([only_types_c] if only_types_c is not None else [])
SCALARS = frozenset((str, int, float, bool, type(None)))


class Text(str):
    pass


@pytest.mark.parametrize("only_types", TYPE_VERSIONS)
def test_every_value_must_be_exactly_one_of_the_types(only_types):
    assert only_types(("a", 1, 2.5, True, None), SCALARS) is True
    assert only_types((), SCALARS) is True
    assert only_types(("a", b"bytes"), SCALARS) is False
    assert only_types(("a", [1]), SCALARS) is False
    assert only_types((Text("a"),), SCALARS) is False  # a subclass is not the type
    rec = RequestRecord(*(["x"] * len(FIELD_NAMES)))
    assert only_types(rec, SCALARS) is True  # a namedtuple is a tuple


def test_the_c_type_check_takes_a_tuple_and_a_frozenset():
    if only_types_c is None:
        pytest.fail("extension not built")
    for args in ((["a"], SCALARS), (("a",), {str}), (("a",), (str,)), ()):
        with pytest.raises(TypeError):
            only_types_c(*args)
