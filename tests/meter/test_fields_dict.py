"""fields_dict, the crash journal's record-to-dict (kraken/meter/journal.py), in C
(kraken/csrc/fields.c) and Python: the same dict, the same refusals."""
from __future__ import annotations

import pytest

from kraken.meter.journal import fields_dict_c, fields_dict_py
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
