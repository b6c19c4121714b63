// Building the page: elements are made with h(), never from HTML strings, so record metadata
// (which anyone with a write token controls) always lands in the page as text.

/**
 * An element. `props` keys: `class`, `text`, `on<event>` handlers, `dataset`, `style`
 * (an object), boolean attributes as true/false, anything else as an attribute.
 * Children are nodes, strings, or (nested) arrays of them; null and false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "value" || key === "checked") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** A place for an error message next to a control; `show(error)` / `clear()`. */
export function errorSlot(id) {
  const node = h("p", { class: "error", id, role: "alert", hidden: true });
  return {
    node,
    show(error) {
      const { message, code } = describeError(error);
      fill(node, message, code ? h("span", { class: "code", text: code }) : null);
      node.hidden = false;
    },
    clear() {
      node.hidden = true;
      node.replaceChildren();
    },
  };
}

/** The words of an error: the API's message (and its code), or the browser's. */
export function describeError(error) {
  if (error && typeof error === "object" && "code" in error && "message" in error) {
    return { message: String(error.message), code: String(error.code) };
  }
  return { message: String(error?.message ?? error), code: "" };
}

/** Numbers as people read them: 12 345, 1.2 MB. */
export function formatCount(value) {
  return Number(value).toLocaleString("en-US").replace(/,/g, "\u202f");
}

export function formatBytes(value) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let size = Number(value);
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) {
    size /= 1000;
    unit += 1;
  }
  return `${size.toFixed(unit === 0 || size >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function plural(count, one, many = `${one}s`) {
  return `${formatCount(count)} ${count === 1 ? one : many}`;
}

/** A metadata value as one short line of text. */
export function formatValue(value, max = 80) {
  let text;
  if (typeof value === "string") text = value;
  else if (typeof value === "number") text = Number.isInteger(value) ? String(value) : String(+value.toFixed(4));
  else text = JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** An http(s) URL safe to use as an image source, or null. */
export function imageUrl(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/** The query kinds this page offers, in words (searching by a raw vector is for the API). */
const KIND_NAMES = { id: "record", image: "image", text: "text", colors: "colour" };

/** A collection's query kinds in words: "record · image · text". */
export function describeKinds(kinds) {
  return kinds.filter((kind) => kind in KIND_NAMES).map((kind) => KIND_NAMES[kind]).join(" · ");
}
