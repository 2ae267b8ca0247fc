"""Case files imported from a CSV file: every row checked and named by line, then all stored or
none (the case-file service stores them)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from models.audit import AuditContext
from models.errors import InvalidInput, NotFound
from models.identity_numbers import IdType
from models.orgs import OrgService
from models.subjects import SubjectInput, SubjectService

IMPORT_COLUMNS = (
    "name",
    "id_type",
    "id_number",
    "phone",
    "gender",
    "birth_date",
    "address",
    "org_code",
)
MAX_IMPORT_ROWS = 5000


class SubjectImportService:
    """Reads a CSV file of case files (UTF-8, with or without a BOM, a header row naming
    `IMPORT_COLUMNS`) and has the case-file service store them all, or none."""

    def __init__(self, subjects: SubjectService, orgs: OrgService):
        self._subjects = subjects
        self._orgs = orgs

    async def import_csv(self, ctx: AuditContext, text: str) -> list[str]:
        """Create every case file in a CSV file, or none; bad rows are reported by line."""
        text = text.removeprefix("\ufeff")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in IMPORT_COLUMNS if c not in header]
        if missing:
            raise InvalidInput(
                "The header row must name " + ", ".join(IMPORT_COLUMNS) + ".",
                details=[{"line": 1, "field": c, "message": "missing column"} for c in missing],
                code="bad_rows",
            )
        reader.fieldnames = header
        problems: list[dict[str, Any]] = []
        prepared: list[tuple[int, dict[str, Any]]] = []
        seen: dict[str, int] = {}
        orgs_by_code: dict[str, str | None] = {}
        for row in reader:
            line = reader.line_num
            if len(prepared) + len(problems) >= MAX_IMPORT_ROWS:
                raise InvalidInput(
                    f"A file may hold at most {MAX_IMPORT_ROWS} case files.", code="too_many_rows"
                )
            if None in row:
                problems.append(
                    {"line": line, "field": "(row)", "message": "more fields than the header"}
                )
                continue
            if not any((v or "").strip() for v in row.values()):
                continue
            code = (row["org_code"] or "").strip()
            if code not in orgs_by_code:
                org = await self._orgs.by_code(code)
                orgs_by_code[code] = org.id if org else None
            if orgs_by_code[code] is None:
                problems.append(
                    {"line": line, "field": "org_code", "message": "no such organisation"}
                )
                continue
            try:
                data = SubjectInput(
                    name=row["name"] or "",
                    id_type=IdType((row["id_type"] or "resident").strip()),
                    id_number=row["id_number"] or "",
                    phone=row["phone"] or "",
                    gender=(row["gender"] or "").strip(),
                    birth_date=dt.date.fromisoformat((row["birth_date"] or "").strip()),
                    address=row["address"] or "",
                    org_id=orgs_by_code[code] or "",
                )
            except ValueError as exc:
                field_name = "id_type" if "IdType" in str(exc) else "birth_date"
                problems.append({"line": line, "field": field_name, "message": "invalid value"})
                continue
            try:
                values = await self._subjects.validated(ctx, data)
            except (InvalidInput, NotFound) as exc:
                detail = (exc.details or [{"field": "org_code"}])[0]
                problems.append(
                    {
                        "line": line,
                        "field": detail.get("field", "(row)"),
                        "message": detail.get("message", exc.message),
                    }
                )
                continue
            if values["id_number"] in seen:
                problems.append(
                    {
                        "line": line,
                        "field": "id_number",
                        "message": f"repeats line {seen[values['id_number']]}",
                    }
                )
                continue
            seen[values["id_number"]] = line
            prepared.append((line, values))
        indexed = []
        for line, values in prepared:
            indexes, exists = await self._subjects.indexed(values)
            if exists:
                problems.append(
                    {
                        "line": line,
                        "field": "id_number",
                        "message": "a case file for this person exists",
                    }
                )
            indexed.append((values, indexes))
        if problems:
            raise InvalidInput(
                f"The file has {len(problems)} bad row(s); nothing was imported.",
                details=sorted(problems, key=lambda p: p["line"]),
                code="bad_rows",
            )
        if not indexed:
            raise InvalidInput("The file holds no case files.", code="bad_rows")
        return await self._subjects.create_many(ctx, indexed)
