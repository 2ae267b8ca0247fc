"""Response models cannot silently drop a field: every model an answer is written through
refuses a field it does not declare, so a field added to a service's view and not to its
response model fails here (or in the route's own tests), instead of vanishing from the API."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ValidationError

from handlers.base import Out, Strict
from server.app import all_routes

SURPLUS = "field_the_model_does_not_declare"


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


def response_models() -> list[type[BaseModel]]:
    """Every model some route answers with, and every model nested in one."""
    found: dict[type[BaseModel], None] = {}
    pending = [
        doc.response
        for route in all_routes()
        for name in ("get", "post", "put", "patch", "delete")
        if (doc := getattr(getattr(route[1], name, None), "__endpoint__", None)) is not None
        and doc.response is not None
    ]
    while pending:
        model = pending.pop()
        if model in found:
            continue
        found[model] = None
        for info in model.model_fields.values():
            pending.extend(_models_in(info.annotation))
    return sorted(found, key=lambda model: f"{model.__module__}.{model.__qualname__}")


def _name(model: type[BaseModel]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


MODELS = response_models()


def test_the_route_table_declares_response_models():
    # The walk below covers something: a route list that stopped declaring responses would
    # make every other test here pass on nothing.
    assert len(MODELS) > 100


@pytest.mark.parametrize("model", MODELS, ids=_name)
def test_a_response_refuses_a_field_it_does_not_declare(model: type[BaseModel]):
    # A request body model (Strict) may be echoed back; it refuses extras too.
    assert issubclass(model, Out | Strict), f"{_name(model)} derives from neither Out nor Strict"
    with pytest.raises(ValidationError) as refused:
        model.model_validate({SURPLUS: "grown in the service"})
    assert any(
        error["type"] == "extra_forbidden" and error["loc"] == (SURPLUS,)
        for error in refused.value.errors()
    )


def _view_type(model: type[BaseModel]) -> type | None:
    """The service view `model.of(view)` is built from, when `of` names a dataclass."""
    of = model.__dict__.get("of")
    if of is None:
        return None
    function = of.__func__ if isinstance(of, classmethod) else of
    hints = typing.get_type_hints(function)
    parameters = list(inspect.signature(function).parameters)
    view = hints.get(parameters[1]) if len(parameters) > 1 else None
    return view if dataclasses.is_dataclass(view) and isinstance(view, type) else None


BUILT_FROM_VIEWS = [(model, view) for model in MODELS if (view := _view_type(model)) is not None]
# Built by unpacking the whole view (`cls(**view.__dict__)`): a field the model lacks is refused.
UNPACKED = [
    (model, view)
    for model, view in BUILT_FROM_VIEWS
    if "cls(**view.__dict__)" in inspect.getsource(model.__dict__["of"].__func__)
]
# Fields of a view a response leaves out on purpose; a field added to a view must be answered
# or named here, never dropped unnoticed.
LEFT_OUT: dict[str, set[str]] = {
    # The tree path is internal; callers get the parent and walk the tree.
    "handlers.admin.OrgOut": {"path"},
    # Answered as one list of rules, each with its value, unit and source.
    "handlers.programs.EffectiveRulesOut": {"values", "overridden_by", "book"},
    # The personal fields the caller may see are answered one by one, beside the rest.
    "handlers.subjects.SubjectOut": {"fields"},
}


def test_response_models_are_built_from_service_views():
    assert len(BUILT_FROM_VIEWS) >= 17
    assert len(UNPACKED) >= 17


@pytest.mark.parametrize(("model", "view"), UNPACKED, ids=[_name(m) for m, _ in UNPACKED])
def test_a_view_with_a_field_the_response_lacks_is_refused(model: type[BaseModel], view: type):
    # The service's view as it would be the day someone adds a field to it and forgets the
    # response: built from it, the response refuses rather than answers without the field.
    grown = types.SimpleNamespace(
        **{field.name: None for field in dataclasses.fields(view)}, **{SURPLUS: "new"}
    )
    with pytest.raises(ValidationError) as refused:
        model.of(grown)  # type: ignore[attr-defined]
    assert any(
        error["type"] == "extra_forbidden" and error["loc"] == (SURPLUS,)
        for error in refused.value.errors()
    )


@pytest.mark.parametrize(
    ("model", "view"), BUILT_FROM_VIEWS, ids=[_name(m) for m, _ in BUILT_FROM_VIEWS]
)
def test_every_field_of_the_view_is_in_the_response(model: type[BaseModel], view: type):
    declared = set(model.model_fields) | LEFT_OUT.get(_name(model), set())
    missing = [field.name for field in dataclasses.fields(view) if field.name not in declared]
    assert missing == [], f"{_name(model)} drops {missing} of {view.__qualname__}"
