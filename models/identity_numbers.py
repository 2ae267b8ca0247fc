"""Identity documents, phones and names: validation and the normal forms blind indexes hash."""

from __future__ import annotations

import datetime as dt
import enum
import re
import unicodedata

from models.errors import InvalidInput


class IdType(enum.StrEnum):
    RESIDENT = "resident"  # 居民身份证 (GB 11643)
    HK_MACAO = "hk_macao"  # 港澳居民来往内地通行证, or a residence permit numbered 81/82…
    TAIWAN = "taiwan"  # 台湾居民来往大陆通行证, or a residence permit numbered 83…
    FOREIGN = "foreign"  # passport or foreigner's permanent residence card


_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_RESIDENT = re.compile(r"^[1-9]\d{16}[\dX]$")
_HK_MACAO_PERMIT = re.compile(r"^[HM]\d{8}(\d{2})?$")
_TAIWAN_PERMIT = re.compile(r"^\d{8}(\d{2})?$")
_FOREIGN = re.compile(r"^[A-Z0-9]{5,20}$")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_LANDLINE = re.compile(r"^0\d{9,11}$")


def normalise_id_number(raw: str) -> str:
    return unicodedata.normalize("NFKC", raw).replace(" ", "").replace("-", "").upper()


def normalise_phone(raw: str) -> str:
    digits = "".join(ch for ch in unicodedata.normalize("NFKC", raw) if ch.isdigit())
    if len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]  # +86 before a mainland mobile
    return digits


def normalise_name(raw: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", raw).split())


def gb11643_check_digit(first17: str) -> str:
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(
        message,
        details=[{"field": field, "type": "invalid", "message": message}],
        code="invalid_id_number" if field == "id_number" else "invalid",
    )


def check_resident_id(
    number: str, birth_date: dt.date | None, gender: str | None, today: dt.date
) -> None:
    """GB 11643: region, birth date, sequence (odd for men), check digit; cross-checked."""
    if len(number) == 15:
        raise _invalid("id_number", "15-digit numbers are obsolete; give the 18-digit number")
    if not _RESIDENT.match(number):
        raise _invalid("id_number", "a resident ID number is 17 digits and a check digit")
    if gb11643_check_digit(number[:17]) != number[17]:
        raise _invalid("id_number", "the check digit does not match (a mistyped digit?)")
    try:
        born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise _invalid("id_number", "the birth date inside the number is not a date") from None
    if born > today or born.year < 1900:
        raise _invalid("id_number", "the birth date inside the number is impossible")
    if birth_date is not None and birth_date != born:
        raise _invalid("birth_date", "the birth date differs from the one in the ID number")
    number_gender = "male" if int(number[16]) % 2 == 1 else "female"
    if gender is not None and gender != number_gender:
        raise _invalid("gender", "the gender differs from the one in the ID number")


def check_id_number(
    id_type: IdType, number: str, birth_date: dt.date | None, gender: str | None, today: dt.date
) -> str:
    """The normalised number, or InvalidInput naming the field."""
    number = normalise_id_number(number)
    if id_type is IdType.RESIDENT:
        check_resident_id(number, birth_date, gender, today)
    elif id_type is IdType.HK_MACAO:
        if len(number) == 18 and number[:2] in ("81", "82"):
            check_resident_id(number, birth_date, gender, today)
        elif not _HK_MACAO_PERMIT.match(number):
            raise _invalid("id_number", "a Hong Kong/Macao permit is H or M and 8 or 10 digits")
    elif id_type is IdType.TAIWAN:
        if len(number) == 18 and number.startswith("83"):
            check_resident_id(number, birth_date, gender, today)
        elif not _TAIWAN_PERMIT.match(number):
            raise _invalid("id_number", "a Taiwan permit number is 8 or 10 digits")
    elif not _FOREIGN.match(number):
        raise _invalid("id_number", "a foreign document number is 5 to 20 letters or digits")
    return number


def check_phone(raw: str) -> str:
    phone = normalise_phone(raw)
    looks_mobile = len(phone) == 11 and phone.startswith("1")
    if looks_mobile and not _MOBILE.match(phone):
        raise _invalid("phone", "not a mainland mobile number")
    # Landlines with area code, and Hong Kong, Macao, Taiwan and foreign numbers.
    if not (looks_mobile or _LANDLINE.match(phone) or 6 <= len(phone) <= 15):
        raise _invalid("phone", "not a phone number")
    return phone
