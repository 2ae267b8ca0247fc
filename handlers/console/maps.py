"""What the console's maps and check-in facts are drawn from: the JSON a map element carries
(static/map.js draws it with Leaflet, no tiles) and distances and time gaps in plain Chinese."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any


def distance_text(metres: float | None) -> str:
    """`255.7 公里`, `320 米`; a dash when there is no distance."""
    if metres is None:
        return "—"
    if metres >= 1000:
        return f"{metres / 1000:.1f} 公里"
    return f"{metres:.0f} 米"


def gap_text(arrived: str | None, captured: str | None) -> str:
    """How long before its arrival a check-in was captured (the device's clock says)."""
    if not arrived or not captured:
        return ""
    seconds = (
        dt.datetime.fromisoformat(arrived) - dt.datetime.fromisoformat(captured)
    ).total_seconds()
    minutes = round(abs(seconds) / 60)
    if minutes < 1:
        return "拍摄与到达时间相差不到 1 分钟"
    span = f"{minutes} 分钟" if minutes < 120 else f"{minutes / 60:.1f} 小时"
    if seconds >= 0:
        return f"拍摄早于到达 {span}"
    return f"手机时间晚于服务器 {span}"


def _point(item: Mapping[str, Any], label: str) -> dict[str, Any]:
    return {
        "lat": item["lat"],
        "lng": item["lng"],
        "accuracy": item.get("accuracy") or 0,
        "label": label,
    }


def map_json(
    item: Mapping[str, Any],
    *,
    label: str,
    area: Mapping[str, Any] | None = None,
    station: Mapping[str, Any] | None = None,
    recent: list[tuple[Mapping[str, Any], str]] | None = None,
    tiles: str = "",
) -> str:
    """The `data-map` of one map: the check-in's point (WGS-84) with its accuracy circle, and
    when known the permitted area, the station and earlier check-ins; `tiles`, the configured
    tile source drawn beneath (ANBANG_MAP_TILES), if any."""
    data: dict[str, Any] = {"point": _point(item, label), "area": None, "station": None}
    if tiles:
        data["tiles"] = tiles
    if area:
        if area.get("polygon"):
            data["area"] = {"polygon": area["polygon"]}
        elif area.get("center"):
            data["area"] = {"center": area["center"], "radius_m": area.get("radius_m") or 0}
    if station and station.get("lat") is not None:
        data["station"] = {"lat": station["lat"], "lng": station["lng"], "label": station["name"]}
    data["recent"] = [_point(other, text) for other, text in recent or []]
    return json.dumps(data, ensure_ascii=False)
