// Renders /openapi.json as a list of operations; no third-party code, no inline script (CSP).
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function resolve(spec, schema) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return { name, schema: spec.components.schemas[name] };
  }
  return { name: null, schema };
}

function schemaBlock(spec, schema) {
  const { name, schema: body } = resolve(spec, schema);
  const wrapper = el("div", {});
  if (name) wrapper.append(el("strong", {}, name));
  wrapper.append(el("pre", {}, JSON.stringify(body, null, 2)));
  return wrapper;
}

function operationBlock(spec, path, method, op) {
  const summary = el("summary", {}, el("span", { class: "method " + method }, method), " ", path,
    " — ", op.summary || "");
  const details = el("details", { class: "op" }, summary);
  details.append(el("p", {}, "Access: ", el("code", {}, String(op["x-anbang-action"]))));
  const body = op.requestBody && op.requestBody.content["application/json"];
  if (body) details.append(el("h4", {}, "Request body"), schemaBlock(spec, body.schema));
  const table = el("table", {}, el("tr", {}, el("th", {}, "Status"), el("th", {}, "Meaning")));
  for (const [status, response] of Object.entries(op.responses)) {
    table.append(el("tr", {}, el("td", {}, status), el("td", {}, response.description || "")));
  }
  details.append(el("h4", {}, "Responses"), table);
  for (const [status, response] of Object.entries(op.responses)) {
    const content = response.content && response.content["application/json"];
    if (content && Number(status) < 400) details.append(schemaBlock(spec, content.schema));
  }
  return details;
}

async function render() {
  const root = document.getElementById("api");
  const spec = await (await fetch("/openapi.json")).json();
  root.textContent = "";
  const byTag = new Map();
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operationBlock(spec, path, method, op));
    }
  }
  for (const [tag, blocks] of byTag) {
    root.append(el("section", { class: "tag" }, el("h2", {}, tag), ...blocks));
  }
}

document.addEventListener("DOMContentLoaded", render);
