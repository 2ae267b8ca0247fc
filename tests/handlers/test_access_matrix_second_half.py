"""The access matrix's second half (tests/handlers/test_access_matrix.py has the first and the
cases): a file of its own so that the two halves run on two workers, each with its database."""

from __future__ import annotations

from tests.handlers.test_access_matrix import MATRIX_PARTS, check_the_matrix


async def test_the_matrix_matches_the_policy_table_second_half(fetch, tree, make_staff):
    assert MATRIX_PARTS == 2
    await check_the_matrix(fetch, tree, make_staff, part=1)
