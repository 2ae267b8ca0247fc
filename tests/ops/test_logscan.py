"""The log scan of `make verify`: what must never be logged is found, and only that."""

from __future__ import annotations

from models.identity_numbers import gb11643_check_digit
from ops.verify.logscan import scan


def valid_id_number() -> str:
    first17 = "33030219900307001"
    return first17 + gb11643_check_digit(first17)


def test_every_kind_of_secret_is_found_and_not_repeated_in_the_report(tmp_path):
    number = valid_id_number()
    (tmp_path / "api.log").write_text(
        "\n".join(
            [
                "GET /healthz 200 1.2ms request_id=5e54662dcae74096b3deb07570656dcf",
                "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
                "calling 13905770001 now",
                f"id {number} seen",
                "visit by 陈国强 today",
                "session Zm9vYmFyYmF6cXV4MTIzNA== kept",
                "code BIND-7Q4K-XY2P used",
            ]
        ),
        encoding="utf-8",
    )
    result = scan([tmp_path], secrets={"BIND-7Q4K-XY2P"})

    kinds = [(finding.line, finding.kind) for finding in result.findings]
    assert kinds == [
        (2, "credential"),
        (3, "phone"),
        (4, "id_number"),
        (5, "subject_name"),
        (6, "session_key"),
        (7, "known_secret"),
    ]
    report = repr(result.as_dict())
    for secret in ("13905770001", number, "陈国强", "BIND-7Q4K-XY2P", "abcdefghijklmnop"):
        assert secret not in report


def test_ordinary_log_lines_are_not_findings(tmp_path):
    (tmp_path / "jobs.log").write_text(
        "\n".join(
            [
                # Timestamps in milliseconds, request ids, digests and an invalid check digit.
                "2026-12-02T23:10:18.010Z at 1796253017000 sweep done in 12 ms",
                "request_id=ef3b4fbaae144877a572ddbcdd826db0 status=201",
                # Hex ids that happen to hold eleven digits starting 1[3-9], or eighteen.
                "request_id=c0ffee13905770001abcdef012345678 status=201",
                "trace f33030219900307001Xe done",
                "digest 0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
                "number 330302199003070012 is not an ID number (bad check digit)",
                "org 鹿城区五马街道司法所 report signed",
            ]
        ),
        encoding="utf-8",
    )
    result = scan([tmp_path])
    assert result.files == 1 and result.lines == 7
    assert result.findings == []
