// The console's maps, drawn offline: no tiles are fetched unless a tile source is configured
// (ANBANG_MAP_TILES, drawn beneath). Each element with `data-map` carries its check-in point
// (WGS-84) and accuracy, and when known the permitted area, the station and earlier check-ins;
// Leaflet draws them as vectors over a plain background with a coordinate grid and a scale bar
// (no inline script: the Content-Security-Policy allows our files only).
"use strict";
(function () {
  // A grid step of 1, 2 or 5 times a power of ten degrees: about four to ten lines across.
  function gridStep(span) {
    var raw = span / 5;
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (raw <= steps[i] * power) {
        return steps[i] * power;
      }
    }
    return 10 * power;
  }

  function drawGrid(map, layer) {
    layer.clearLayers();
    var b = map.getBounds();
    var south = b.getSouth(), north = b.getNorth(), west = b.getWest(), east = b.getEast();
    var step = gridStep(Math.max(north - south, east - west));
    var style = { className: "map-grid", weight: 1, color: "#c9d3de", interactive: false };
    for (var lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      L.polyline([[lat, west], [lat, east]], style).addTo(layer);
    }
    for (var lng = Math.ceil(west / step) * step; lng <= east; lng += step) {
      L.polyline([[south, lng], [north, lng]], style).addTo(layer);
    }
  }

  function draw(element) {
    var data = JSON.parse(element.getAttribute("data-map"));
    var small = element.classList.contains("mini-map");
    var map = L.map(element, {
      attributionControl: false,
      zoomControl: !small,
      scrollWheelZoom: false,
      dragging: !small,
      doubleClickZoom: !small,
      boxZoom: false,
      keyboard: false,
      zoomSnap: 0.25
    });
    if (data.tiles) {
      // A configured tile source (ANBANG_MAP_TILES, e.g. 天地图) under the vectors; without one
      // nothing is fetched and the grid stands in for a background.
      L.tileLayer(data.tiles, { maxZoom: 18, className: "map-tiles" }).addTo(map);
    }
    var grid = L.layerGroup().addTo(map);
    var shapes = L.featureGroup().addTo(map);
    // Bounds gathered as drawn: a circle knows its own only once the map has a view.
    var bounds = L.latLngBounds([]);
    var area = data.area;
    if (area && area.polygon) {
      bounds.extend(area.polygon);
      L.polygon(area.polygon, {
        className: "map-area", color: "#1f6feb", weight: 2, fillOpacity: 0.08
      }).bindTooltip("允许活动范围").addTo(shapes);
    } else if (area && area.center) {
      bounds.extend(L.latLng(area.center).toBounds(2 * area.radius_m));
      L.circle(area.center, {
        radius: area.radius_m, className: "map-area", color: "#1f6feb", weight: 2, fillOpacity: 0.08
      }).bindTooltip("允许活动范围").addTo(shapes);
    }
    if (data.station) {
      bounds.extend([data.station.lat, data.station.lng]);
      L.circleMarker([data.station.lat, data.station.lng], {
        radius: 6, className: "map-station", color: "#16365c", weight: 2, fillColor: "#fff", fillOpacity: 1
      }).bindTooltip(data.station.label).addTo(shapes);
    }
    (data.recent || []).forEach(function (other) {
      bounds.extend([other.lat, other.lng]);
      L.circleMarker([other.lat, other.lng], {
        radius: 4, className: "map-recent", color: "#6b7785", weight: 1, fillOpacity: 0.6
      }).bindTooltip(other.label).addTo(shapes);
    });
    var point = data.point;
    if (point) {
      bounds.extend(L.latLng(point.lat, point.lng).toBounds(2 * Math.max(point.accuracy, 150)));
      if (point.accuracy > 0) {
        L.circle([point.lat, point.lng], {
          radius: point.accuracy, className: "map-accuracy", color: "#b42318", weight: 1,
          dashArray: "4 3", fillOpacity: 0.12, interactive: false
        }).addTo(shapes);
      }
      L.circleMarker([point.lat, point.lng], {
        radius: small ? 4 : 6, className: "map-point", color: "#b42318", weight: 2,
        fillColor: "#b42318", fillOpacity: 0.9
      }).bindTooltip(point.label).addTo(shapes);
    }
    if (bounds.isValid()) {
      // A lone point shows at least some 300 m around it, never the deepest zoom.
      map.fitBounds(bounds, { padding: small ? [6, 6] : [24, 24] });
    } else {
      map.setView([35, 105], 4);
    }
    map.on("moveend zoomend", function () { drawGrid(map, grid); });
    drawGrid(map, grid);
    L.control.scale({ metric: true, imperial: false, maxWidth: small ? 80 : 160 }).addTo(map);
    element.setAttribute("data-drawn", "1");
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof L === "undefined") {
      return;
    }
    var elements = document.querySelectorAll("[data-map]");
    for (var i = 0; i < elements.length; i++) {
      draw(elements[i]);
    }
  });
})();
