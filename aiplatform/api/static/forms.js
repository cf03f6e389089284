// Forms generated from a template's JSON schema.

import { h } from "./dom.js";

export function fieldSpec(prop) {
  // Optional[...] arrives as anyOf [X, null]
  if (prop.anyOf) {
    const inner = prop.anyOf.find((p) => p.type !== "null") || {};
    return { ...inner, ...prop, anyOf: undefined, type: inner.type, optional: true };
  }
  return { ...prop };
}

export function schemaField(name, prop) {
  const spec = fieldSpec(prop);
  const hint = [spec.description, spec.minimum !== undefined ? `min ${spec.minimum}` : null,
    spec.exclusiveMinimum !== undefined ? `> ${spec.exclusiveMinimum}` : null,
    spec.maximum !== undefined ? `max ${spec.maximum}` : null,
    spec.exclusiveMaximum !== undefined ? `< ${spec.exclusiveMaximum}` : null].filter(Boolean).join("; ");
  let input;
  if (spec.enum) {
    input = h("select", { name }, spec.enum.map((v) => h("option", { value: JSON.stringify(v), selected: v === spec.default }, String(v))));
  } else if (spec.type === "boolean") {
    input = h("input", { type: "checkbox", name, checked: spec.default === true });
  } else if (spec.type === "integer" || spec.type === "number") {
    input = h("input", { type: "text", inputmode: "decimal", name, value: spec.default ?? "", placeholder: spec.optional ? "(none)" : "" });
  } else if (spec.type === "array") {
    input = h("input", { type: "text", name, value: (spec.default || []).join(", "), placeholder: "comma-separated" });
  } else {
    input = h("input", { type: "text", name, value: spec.default ?? "" });
  }
  input.dataset.kind = spec.enum ? "enum" : spec.type || "string";
  if (spec.type === "array") input.dataset.items = (spec.items && spec.items.type) || "string";
  input.dataset.default = JSON.stringify(spec.default ?? null);
  if (spec.optional) input.dataset.optional = "true";  // left empty: not sent (the server's default)
  input.id = `param-${name}`;
  return h("label", { for: input.id }, h("span", { class: "name" }, spec.title || name), input, hint ? h("small", {}, hint) : null);
}

export function readNumber(raw) { const n = Number(raw); return raw.trim() !== "" && Number.isFinite(n) ? n : raw; }

// Only values that differ from the schema's defaults are sent; the server validates them all.
export function readParams(form) {
  const params = {};
  for (const input of form.querySelectorAll("[data-kind]")) {
    let value;
    const kind = input.dataset.kind;
    if (kind === "boolean") value = input.checked;
    else if (kind === "enum") value = JSON.parse(input.value);
    else if (kind === "integer" || kind === "number") { if (input.value.trim() === "") continue; value = readNumber(input.value); }
    else if (input.dataset.optional && input.value.trim() === "") continue;
    else if (kind === "array") {
      const parts = input.value.split(",").map((p) => p.trim()).filter(Boolean);
      value = input.dataset.items === "string" ? parts : parts.map(readNumber);
    } else value = input.value;
    if (JSON.stringify(value) !== input.dataset.default) params[input.name] = value;
  }
  return params;
}
