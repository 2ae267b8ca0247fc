"""Valid identity documents and case-file bodies for tests."""

from __future__ import annotations

import datetime as dt
import itertools

from models.identity_numbers import gb11643_check_digit

_sequence = itertools.count(101)


def resident_id(birth: dt.date, gender: str, region: str = "330302") -> str:
    """A valid GB 11643 number: region, birth date, a sequence odd for men, check digit."""
    n = next(_sequence)
    seq = n % 500 * 2 + (1 if gender == "male" else 0)
    # Past 500 people of one birth date and gender, move to another district's code.
    region = region[:4] + f"{(int(region[4:]) + n // 500) % 100:02d}"
    first17 = f"{region}{birth:%Y%m%d}{seq:03d}"
    return first17 + gb11643_check_digit(first17)


def subject_body(
    org_id: str,
    *,
    name: str = "张伟",
    gender: str = "male",
    birth: dt.date = dt.date(1990, 3, 7),
    phone: str = "13812345678",
    address: str = "浙江省温州市鹿城区五马街88号",
) -> dict:
    return {
        "name": name,
        "id_type": "resident",
        "id_number": resident_id(birth, gender),
        "phone": phone,
        "gender": gender,
        "birth_date": birth.isoformat(),
        "address": address,
        "org_id": org_id,
    }
