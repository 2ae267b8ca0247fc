"""/openapi.json as a client generator reads it: a valid OpenAPI 3.1 document whose operations
each have their own readable id."""

from __future__ import annotations

import collections

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from handlers.base import BaseHandler, endpoint
from handlers.openapi import build_openapi, operation_id
from models.policy import PUBLIC


def _operation_ids(document: dict) -> list[str]:
    return [op["operationId"] for ops in document["paths"].values() for op in ops.values()]


async def test_the_served_document_validates_as_openapi_3_1(fetch):
    answer = await fetch("/openapi.json")
    assert answer.status == 200
    document = answer.json
    assert document["openapi"] == "3.1.0"
    errors = [str(error) for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []


async def test_every_operation_id_is_unique(fetch):
    ids = _operation_ids((await fetch("/openapi.json")).json)
    repeated = {name: n for name, n in collections.Counter(ids).items() if n > 1}
    assert repeated == {}
    assert all(name and name[0].islower() and name.isalnum() for name in ids), ids


async def test_operation_ids_read_as_verb_and_noun(fetch):
    paths = (await fetch("/openapi.json")).json["paths"]
    named = {
        (method, path): op["operationId"]
        for path, ops in paths.items()
        for method, op in ops.items()
    }
    assert named[("get", "/api/v1/assistance/resources/{resource_id}")] == "getAssistanceResource"
    assert named[("get", "/api/v1/assistance/facilities/{resource_id}")] == "getAssistanceFacility"
    assert named[("post", "/api/v1/auth/login")] == "login"
    assert named[("post", "/mp/v1/auth/login")] == "mpLogin"
    assert named[("get", "/api/v1/me")] == "getMe"
    assert named[("get", "/mp/v1/me")] == "mpGetMe"
    assert named[("get", "/api/v1/staff")] == "listStaff"
    assert named[("get", "/api/v1/staff/{staff_id}")] == "getStaff"
    assert named[("post", "/api/v1/subjects/{subject_id}/notes")] == "createSubjectNote"
    assert named[("post", "/api/v1/programs/{program_id}/transition")] == "transitionProgram"
    assert named[("post", "/api/v1/leave-requests/{leave_id}/return")] == "recordLeaveRequestReturn"
    assert (
        named[("post", "/mp/v1/leave-requests/{leave_id}/return")] == "mpRecordLeaveRequestReturn"
    )
    assert named[("post", "/mp/v1/checkins")] == "mpCheckIn"


def test_a_derived_id_depends_on_method_and_path_only():
    assert operation_id("put", "/api/v1/orgs/{org_id}/area") == "setOrgArea"
    assert operation_id("patch", "/api/v1/subjects/{subject_id}") == "updateSubject"
    assert operation_id("delete", "/api/v1/subjects/{subject_id}/notes/{note_id}") == (
        "deleteSubjectNote"
    )
    assert operation_id("post", "/api/v1/me/password") == "changeMyPassword"
    assert operation_id("get", "/healthz") == "getHealthz"
    listed = frozenset({"/mp/v1/worker/alerts"})
    assert operation_id("get", "/mp/v1/worker/alerts", listed) == "mpListWorkerAlerts"


class _Probe(BaseHandler):
    access = PUBLIC

    @endpoint("A route whose derived id another route takes as well")
    async def get(self) -> None:
        self.respond({})


def test_a_route_whose_id_is_taken_is_refused_when_the_document_is_built():
    with pytest.raises(ValueError, match="getAB"):
        build_openapi(
            [(r"/api/v1/a-b", _Probe), (r"/api/v1/aB", _Probe)], title="probe", version="0"
        )
