"""Template ids that cannot be field names of a consent record are refused by the service."""

from __future__ import annotations

import pytest

from models.errors import InvalidInput

BAD_IDS = ["a.b", "$inc", "tmpl\n", "tmpl id", "x" * 129, "模板", "\ud800"]


@pytest.mark.parametrize("template_id", BAD_IDS)
async def test_a_template_id_of_another_form_is_refused_and_nothing_is_stored(
    services, template_id
):
    consents = services.consents
    with pytest.raises(InvalidInput) as refused:
        await consents.accept_templates(None, "user-1", ["ok-1", template_id], long_term=False)
    assert refused.value.details == [{"field": "template_ids"}]
    with pytest.raises(InvalidInput):
        await consents.refuse_templates("user-1", [template_id])
    with pytest.raises(InvalidInput):
        await consents.consume("user-1", template_id)
    with pytest.raises(InvalidInput):
        await consents.restore("user-1", template_id)
    state = await consents.state("user-1")
    assert state.one_time == {} and state.refused == [] and state.long_term == []


async def test_a_template_id_of_wechats_form_is_counted(services):
    consents = services.consents
    template_id = "Vx3-fgH_9kLmNoPqRsTuVwXyZ0123456789abcdefgh"
    state = await consents.accept_templates(None, "user-2", [template_id], long_term=False)
    assert state.one_time == {template_id: 1}
    assert await consents.consume("user-2", template_id) is True
    assert await consents.consume("user-2", template_id) is False
