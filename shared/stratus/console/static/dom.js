// DOM helpers. Every piece of text from the API (document text, sources, names) goes in as a text
// node; no function here ever assigns HTML. Links are made only for http(s) URLs.

const ATTRS = new Set([
  "id", "class", "type", "name", "value", "for", "placeholder", "title", "role", "tabindex", "min", "max",
  "step", "checked", "disabled", "hidden", "selected", "multiple", "accept", "rows", "scope", "colspan",
  "autocomplete", "required", "open", "lang", "target", "rel", "download",
]);

/** Element with safe attributes (aria-*, data-* and a fixed list), event handlers and text children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "href") {
      const url = safeUrl(value);
      if (url) node.setAttribute("href", url);
    } else if (key.startsWith("aria-") || key.startsWith("data-") || ATTRS.has(key)) {
      node.setAttribute(key, value === true ? "" : String(value));
    } else {
      throw new Error(`attribute ${key} is not allowed`);
    }
  }
  append(node, children);
  return node;
}

/** Append children: nodes as they are, anything else as text. */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The URL when it is http(s) (absolute, or relative to the page); null for javascript:, data: and the rest. */
export function safeUrl(value) {
  try {
    const url = new URL(String(value), location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/** Replace a node's children. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

const WORD = /[\p{L}\p{N}_]{2,}/gu;

/** The text with the query's words wrapped in <mark> (text nodes only). */
export function highlight(text, query) {
  const words = [...new Set((query.match(WORD) || []).map((w) => w.toLowerCase()))];
  if (!words.length) return [text];
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`(${escaped.join("|")})`, "giu");
  return text.split(pattern).map((part, i) => (i % 2 === 1 ? el("mark", {}, part) : part));
}

/** A short local date and time, or an em dash. */
export function when(seconds) {
  if (!seconds) return "—";
  return new Date(seconds * 1000).toLocaleString();
}

/** Show a message in the live region. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  box.className = `toast ${kind}`;
  box.textContent = message;
}
