"""Coordinates and areas: GCJ-02 to WGS-84, distances, and whether a point lies in an area.

Geofences are evaluated here, in the application, so coordinates can stay encrypted at rest
(DESIGN: location history is sensitive personal information, PIPL Art. 28).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EARTH_RADIUS_M = 6_371_008.8
# The Krasovsky ellipsoid constants of the published GCJ-02 transform.
_A = 6_378_245.0
_EE = 0.006_693_421_622_965_943


@dataclass(frozen=True)
class Point:
    lat: float
    lng: float


def in_china(point: Point) -> bool:
    # GCJ-02 offsets apply inside mainland China's bounding box only; elsewhere it equals WGS-84.
    return 72.004 <= point.lng <= 137.8347 and 0.8293 <= point.lat <= 55.8271


def _transform_lat(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return ret


def _transform_lng(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return ret


def wgs84_to_gcj02(point: Point) -> Point:
    if not in_china(point):
        return point
    d_lat = _transform_lat(point.lng - 105.0, point.lat - 35.0)
    d_lng = _transform_lng(point.lng - 105.0, point.lat - 35.0)
    rad_lat = point.lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lng = (d_lng * 180.0) / (_A / sqrt_magic * math.cos(rad_lat) * math.pi)
    return Point(point.lat + d_lat, point.lng + d_lng)


def gcj02_to_wgs84(point: Point) -> Point:
    """The inverse by fixed-point iteration: within a few centimetres after a handful of
    steps (the one-step inverse common in code on the web is off by metres)."""
    if not in_china(point):
        return point
    guess = point
    for _ in range(10):
        shifted = wgs84_to_gcj02(guess)
        d_lat, d_lng = shifted.lat - point.lat, shifted.lng - point.lng
        guess = Point(guess.lat - d_lat, guess.lng - d_lng)
        if abs(d_lat) < 1e-9 and abs(d_lng) < 1e-9:
            break
    return guess


def distance_m(a: Point, b: Point) -> float:
    """Great-circle distance (haversine) in metres."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    d_phi = phi2 - phi1
    d_lambda = math.radians(b.lng - a.lng)
    h = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class Area:
    """A permitted area: a polygon (WGS-84 vertices), or a centre and a radius in metres."""

    polygon: tuple[Point, ...] = ()
    center: Point | None = None
    radius_m: float = 0.0

    def contains(self, point: Point) -> bool:
        if self.polygon:
            return _in_polygon(point, self.polygon)
        if self.center is not None:
            return distance_m(self.center, point) <= self.radius_m
        return False

    def widened(self, radius_m: float) -> Area:
        """The same centre with at least `radius_m` (leave: a wider area around home)."""
        center = self.center or _centroid(self.polygon)
        return Area(center=center, radius_m=max(radius_m, self.radius_m))

    def to_doc(self) -> dict[str, Any]:
        if self.polygon:
            return {"polygon": [[p.lat, p.lng] for p in self.polygon]}
        assert self.center is not None
        return {"center": [self.center.lat, self.center.lng], "radius_m": self.radius_m}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Area:
        if doc.get("polygon"):
            return cls(polygon=tuple(Point(float(a), float(b)) for a, b in doc["polygon"]))
        lat, lng = doc["center"]
        return cls(center=Point(float(lat), float(lng)), radius_m=float(doc["radius_m"]))


def _centroid(points: Sequence[Point]) -> Point:
    return Point(sum(p.lat for p in points) / len(points), sum(p.lng for p in points) / len(points))


def _in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Ray casting on (lng, lat); areas are a town or a county, small enough for the plane."""
    inside = False
    count = len(polygon)
    for i in range(count):
        a, b = polygon[i], polygon[(i + 1) % count]
        if (a.lat > point.lat) != (b.lat > point.lat):
            crossing = a.lng + (point.lat - a.lat) * (b.lng - a.lng) / (b.lat - a.lat)
            if point.lng < crossing:
                inside = not inside
    return inside
