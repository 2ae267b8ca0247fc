"""The case list's rosters: every writer of a listed field keeps them equal to a rebuild, the list
read from them equals the list asked of the case files, and a rebuild never undoes a change."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import pytest
from bson import ObjectId

from models.audit import AuditContext
from models.case_roster import (
    COMPLETE_ID,
    LIST_PROJECTION,
    CaseRoster,
    entry_fields,
    pack,
    unpack,
)
from models.identity_numbers import IdType
from models.policy import Role
from models.subjects import CASE_LIST_SORTS, CaseListQuery, SubjectInput, case_list_conditions
from server.app import SYSTEM
from tests.subject_factories import resident_id

pytestmark = pytest.mark.asyncio

_births = itertools.count()


def person(org_id: str, name: str, *, birth: dt.date | None = None) -> SubjectInput:
    birth = birth or dt.date(1980, 1, 1) + dt.timedelta(days=next(_births) * 97)
    return SubjectInput(
        name=name,
        id_type=IdType.RESIDENT,
        id_number=resident_id(birth, "male"),
        phone="13800000000",
        gender="male",
        birth_date=birth,
        address="测试路 1 号",
        org_id=org_id,
    )


async def rosters(store: Any) -> dict[str, dict[str, Any]]:
    """What the rosters say of each file: its unit and listed fields."""
    found: dict[str, dict[str, Any]] = {}
    async for roster in store.database["case_rosters"].find({"_id": {"$ne": COMPLETE_ID}}):
        for sid, entry in unpack(roster).items():
            assert sid not in found, f"{sid} is in two rosters"
            found[sid] = {"unit": roster["_id"], "path": roster["org_path"], **entry_fields(entry)}
    return found


async def rebuilt(store: Any) -> dict[str, dict[str, Any]]:
    """What a rebuild from the case files would put in the rosters."""
    fresh = CaseRoster(store)
    await fresh.rebuild(lambda: aiter(store.database["subjects"].find({}, LIST_PROJECTION)))
    return await rosters(store)


async def test_every_writer_keeps_the_rosters_equal_to_a_rebuild(
    services, store, tree, make_staff, clock
):
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    successor = await make_staff(Role.SOCIAL_WORKER, tree.station)
    grid = await make_staff(Role.GRID_WORKER, tree.grid)
    subjects = services.subjects
    steps: list[tuple[str, Any]] = []

    first = await subjects.create(SYSTEM, person(tree.station.id, "甲"))
    steps.append(("create", first))
    second = await subjects.create(SYSTEM, person(tree.station.id, "乙"))
    await subjects.set_assignments(
        SYSTEM, first.id, [worker.id], [grid.id], [], services.staff.lookup
    )
    steps.append(("assign", first))
    await subjects.hand_over_caseload(SYSTEM, worker.id, [successor.id], services.staff.lookup)
    steps.append(("hand over", first))
    await subjects.update(SYSTEM, second.id, 1, {"org_id": tree.station2.id})
    steps.append(("update to another station", second))
    await subjects.move(SYSTEM, second.id, tree.other_station.id)
    steps.append(("move", second))
    await subjects.set_populations(first.id, ["community_corrections"])
    steps.append(("populations", first))
    await subjects.add_referral_org(first.id, tree.county.id)
    steps.append(("referral", first))
    minor = await subjects.create(
        SYSTEM, person(tree.station.id, "丙", birth=clock.now().date().replace(year=2000))
    )
    await subjects.note_corrections_start(minor.id, dt.date(2017, 1, 1))
    steps.append(("juvenile from the start of corrections", minor))
    csv_text = "name,id_type,id_number,phone,gender,birth_date,address,org_code\n" + "\n".join(
        f"丁{i},resident,{resident_id(dt.date(1975, 5, i + 1), 'male')},13800000000,male,"
        f"1975-05-{i + 1:02d},测试路 2 号,{tree.station2.code}"
        for i in range(3)
    )
    await services.subject_import.import_csv(SYSTEM, csv_text)
    steps.append(("import", None))
    await subjects.shred(SYSTEM, first.id)
    steps.append(("shred", first))

    kept = await rosters(store)
    assert kept == await rebuilt(store)
    assert len(kept) == 6
    assert kept[first.id]["status"] == "shredded"
    assert str(kept[second.id]["unit"]) == tree.other_station.id
    assert kept[minor.id]["juvenile"] is True
    assert kept[first.id]["social_worker_ids"] == [successor.id]


async def county_context(make_staff, tree) -> AuditContext:
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    return AuditContext(county.identity, "test")


async def test_the_list_from_the_rosters_is_the_list_from_the_files(
    services, store, tree, make_staff, clock
):
    subjects = services.subjects
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    ids = []
    for index in range(23):
        clock.advance(dt.timedelta(minutes=7 if index % 3 else 1))
        station = tree.station if index % 2 else tree.station2
        view = await subjects.create(SYSTEM, person(station.id, f"人{index}"))
        ids.append(view.id)
        if index % 4 == 0:
            await subjects.set_assignments(
                SYSTEM, view.id, [worker.id], [], [], services.staff.lookup
            )
        if index % 5 == 0:
            await subjects.set_populations(view.id, ["drug_rehab"])
    ctx = await county_context(make_staff, tree)
    queries = [
        CaseListQuery(sort=sort, page=page, per_page=5)
        for sort in CASE_LIST_SORTS
        for page in (1, 3, 5, 9)
    ] + [
        CaseListQuery(station=tree.station.id, per_page=4, page=2),
        CaseListQuery(population="drug_rehab"),
        CaseListQuery(worker=worker.id, sort="oldest"),
        CaseListQuery(flags=frozenset({"unassigned"}), per_page=6, page=2),
        CaseListQuery(flags=frozenset({"juvenile"})),
        CaseListQuery(status="active", sort="updated", per_page=10, page=2),
    ]
    for query in queries:
        from_rosters = await subjects.case_list(ctx, query, services.staff.lookup)
        # The database's own filter and sort of the same query, asked of the files.
        total, _, docs = await subjects._page_by_pass(_filter_for(ctx, query), query, None)
        assert from_rosters.total == total, query
        assert [item.id for item in from_rosters.items] == [str(d["_id"]) for d in docs], query
    assert await store.database["case_rosters"].find_one({"_id": COMPLETE_ID})


def _filter_for(ctx: AuditContext, query: CaseListQuery) -> dict[str, Any]:
    return {"$and": [{"org_path": ctx.identity.org_id}, *case_list_conditions(query)]}


async def test_a_database_from_before_the_rosters_is_listed_whole(
    services, store, tree, make_staff
):
    for index in range(5):
        await services.subjects.create(SYSTEM, person(tree.station.id, f"旧{index}"))
    await store.database["case_rosters"].drop()
    ctx = await county_context(make_staff, tree)
    listed = await services.subjects.case_list(ctx, CaseListQuery(), services.staff.lookup)
    assert listed.total == 5
    assert await store.database["case_rosters"].find_one({"_id": COMPLETE_ID})


async def test_a_rebuild_never_undoes_a_change_made_while_it_scans(
    services, store, tree, make_staff
):
    """A file's change written through while the rebuild reads the files is kept: the unit's
    roster is replaced only if its version is the one read before the scan, else scanned again."""
    subjects = services.subjects
    view = await subjects.create(SYSTEM, person(tree.station.id, "戊"))
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    files = store.database["subjects"]
    changed = False

    async def scan_with_a_change_midway():
        nonlocal changed
        async for doc in files.find({}, LIST_PROJECTION):
            if not changed:
                changed = True
                # The scan has read the file as it was; now someone assigns a worker.
                await subjects.set_assignments(
                    SYSTEM, view.id, [worker.id], [], [], services.staff.lookup
                )
            yield doc

    outcome = await CaseRoster(store).rebuild(scan_with_a_change_midway)
    assert outcome["units"] == 1
    kept = await rosters(store)
    assert kept[view.id]["social_worker_ids"] == [worker.id]


async def test_a_file_lost_from_its_roster_is_put_back_by_the_nightly_sweep(
    services, store, tree, make_staff
):
    from jobs.sweeps import CaseRosterSweep

    view = await services.subjects.create(SYSTEM, person(tree.station.id, "己"))
    ctx = await county_context(make_staff, tree)
    await services.subjects.case_list(ctx, CaseListQuery(), services.staff.lookup)
    # A crash between the file's write and its roster's write; the roster changed since.
    rosters_collection = store.database["case_rosters"]
    roster = await rosters_collection.find_one({"_id": ObjectId(tree.station.id)})
    entries = unpack(roster)
    del entries[view.id]
    version = ObjectId()
    await rosters_collection.update_one(
        {"_id": roster["_id"]}, {"$set": {**pack(entries), "version": version}}
    )
    await store.database["case_roster_versions"].update_one(
        {"_id": roster["_id"]}, {"$set": {"version": version}}
    )
    assert (
        await services.subjects.case_list(ctx, CaseListQuery(), services.staff.lookup)
    ).total == 0
    report = await CaseRosterSweep(services.subjects).run(dt.datetime.now(dt.UTC))
    assert report["files"] == 1
    listed = await services.subjects.case_list(ctx, CaseListQuery(), services.staff.lookup)
    assert [item.id for item in listed.items] == [view.id]


async def test_files_opened_at_once_at_one_station_are_all_listed(services, store, tree):
    """A roster is one value rewritten on each change: writers at one station take turns
    (the version decides), and none of them loses another's file."""
    created = await asyncio.gather(
        *(services.subjects.create(SYSTEM, person(tree.station.id, f"同时{i}")) for i in range(8))
    )
    kept = await rosters(store)
    assert {view.id for view in created} <= set(kept)
    assert kept == await rebuilt(store)
