"""bench.instructions reads callgrind_annotate's table into a total and a split by library."""

from __future__ import annotations

from bench.instructions import split_annotation

ANNOTATED = """\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
935,199,680 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                    file:function
--------------------------------------------------------------------------------
121,059,650 (12.94%)  python-build.2/Python-3.11.7/Python/ceval.c:PyObject_Vectorcall
 37,979,678 ( 4.06%)  Python-3.11.7/Python/ceval.c:_PyEval_EvalFrameDefault [/usr/lib/libpython3.11.so.1.0]
 11,758,538 ( 1.26%)  ???:0x000000000003445d [/v/isal/isal_zlib.cpython-311-x86_64-linux-gnu.so]
 10,031,870 ( 1.07%)  ???:create_hufftables_icf [/v/isal/isal_zlib.cpython-311-x86_64-linux-gnu.so]
  6,962,817 ( 0.74%)  ./string/memset.S:__memset_avx2_unaligned_erms [/usr/lib/x86_64-linux-gnu/libc.so.6]
      1,000 ( 0.00%)  ???:0x0000000000001234
"""


def test_the_total_and_each_library_are_read_from_the_table() -> None:
    total, by_object = split_annotation(ANNOTATED)
    assert total == 935_199_680
    assert by_object == {
        "libpython3": 121_059_650 + 37_979_678,  # a line with no object is the interpreter's when its file is
        "isal_zlib": 11_758_538 + 10_031_870,
        "libc": 6_962_817,
        "?": 1_000,
    }


def test_a_table_without_totals_reads_as_nothing_counted() -> None:
    assert split_annotation("no table here\n") == (0, {})
