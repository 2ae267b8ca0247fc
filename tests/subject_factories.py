"""Valid identity documents and case-file bodies for tests."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

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


# Probation from 1 October 2026 for a year: the community-corrections program the dashboard
# and window tests open.
PROBATION = {
    "type": "community_corrections",
    "start_date": "2026-10-01",
    "end_date": "2027-09-30",
    "sentence_type": "probation",
}


async def open_probation(fetch: Any, token: str, station_id: str, name: str) -> tuple[str, str]:
    """A case file at the station and its probation, opened through the API by the officer
    whose token is given: (subject id, program id)."""
    created = await fetch(
        "/api/v1/subjects", "POST", token=token, json_body=subject_body(station_id, name=name)
    )
    assert created.status == 201, created.body
    program = await fetch(
        f"/api/v1/subjects/{created.json['id']}/programs", "POST", token=token, json_body=PROBATION
    )
    assert program.status == 201, program.body
    return created.json["id"], program.json["id"]
