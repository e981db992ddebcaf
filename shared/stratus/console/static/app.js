// The Stratus console: hash-routed screens over the public API. Plain ES modules, no build step.
import { api, ApiError, root, session, stream } from "./api.js";
import { append, el, highlight, replace, safeUrl, toast, when } from "./dom.js";

const main = document.getElementById("main");
const FINAL = new Set(["INDEXED", "FAILED", "DELETED"]);
const state = { who: null, collections: [], collection: null, config: {}, sources: null };
let routed = 0;

const SCREENS = [
  { id: "collections", title: "Collections", render: collectionsScreen },
  { id: "documents", title: "Documents", render: documentsScreen },
  { id: "sources", title: "Sources", render: sourcesScreen, shown: () => state.sources !== false },
  { id: "search", title: "Search", render: searchScreen },
  { id: "chat", title: "Chat", render: chatScreen },
  { id: "operations", title: "Operations", render: operationsScreen, shown: () => isAdmin() },
  { id: "keys", title: "Keys", render: keysScreen, shown: () => isAdmin() },
];

const isAdmin = () => !!state.who && state.who.roles.includes("admin");
const canWrite = () => !!state.who && (state.who.roles.includes("write") || isAdmin());

/** Run fn every ms while the view is on the page; a view left behind stops its own timer. */
function every(view, ms, fn) {
  const id = setInterval(() => { if (view.isConnected) fn(); else clearInterval(id); }, ms);
}

function heading(text) {
  return el("h1", { id: "screen-title", tabindex: "-1" }, text);
}

function problem(error) {
  const message = error instanceof ApiError ? `${error.status}: ${error.detail}` : String(error);
  return el("p", { class: "error", role: "alert" }, message);
}

function collectionPicker(onChange) {
  const id = "collection-picker";
  const select = el("select", { id, name: "collection", onchange: (e) => { state.collection = e.target.value; onChange(); } },
    state.collections.map((c) => el("option", { value: c, selected: c === state.collection }, c)));
  const custom = el("input", { id: "collection-new", name: "collection-new", placeholder: "new-collection",
    autocomplete: "off", "aria-label": "Or type a collection name" });
  const use = el("button", { type: "button", onclick: () => {
    const name = custom.value.trim();
    if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(name)) { toast("collection names are a-z, 0-9, _ and -", "error"); return; }
    if (!state.collections.includes(name)) state.collections.push(name);
    state.collection = name; onChange(); route();
  } }, "Use");
  return el("div", { class: "picker" }, el("label", { for: id }, "Collection"), select,
    canWrite() ? [custom, use] : null);
}

// --- sign-in ---------------------------------------------------------------------------------------

function signInScreen(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  replace(document.getElementById("who"));
  const input = el("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true,
    placeholder: "strk_…" });
  const form = el("form", { class: "card narrow", onsubmit: async (e) => {
    e.preventDefault();
    session.key = input.value.trim();
    await start();
  } },
  el("label", { for: "key" }, "API key"), input,
  el("p", { class: "hint" }, "The key stays in this tab's session storage and is sent as x-api-key."),
  el("button", { type: "submit" }, "Sign in"));
  replace(main, heading("Sign in"), message ? el("p", { class: "error", role: "alert" }, message) : null, form);
  input.focus();
}

async function start() {
  try {
    state.who = await api("GET", "/v1/whoami");
  } catch (error) {
    session.key = null;
    signInScreen(error instanceof ApiError && error.status === 401 ? "That key is not valid." : String(error));
    return;
  }
  const listed = (await api("GET", "/v1/collections")).collections;
  const own = state.who.collections.filter((c) => c !== "*");
  state.collections = [...new Set([...listed, ...own])].sort();
  state.collection = state.collection && state.collections.includes(state.collection)
    ? state.collection : state.collections[0] || null;
  // The Sources screen needs the sources routes (issue 14 item 7); config.json says whether this API has them.
  state.sources = !!(state.config.features && state.config.features.sources);
  const who = document.getElementById("who");
  replace(who, `${state.who.name} · ${state.who.roles.join(", ")}`);
  const out = document.getElementById("signout");
  out.hidden = false;
  out.onclick = () => { session.key = null; state.who = null; location.hash = ""; signInScreen(); };
  buildNav();
  if (!location.hash || location.hash === "#") location.hash = "#/collections";
  else route();
}

function buildNav() {
  const nav = document.getElementById("nav");
  nav.hidden = false;
  replace(nav, el("ul", {}, SCREENS.filter((s) => !s.shown || s.shown()).map((s) =>
    el("li", {}, el("a", { href: `#/${s.id}`, "data-screen": s.id }, s.title)))));
}

async function route() {
  if (!state.who) return;
  // Each route renders into a view of its own; a slower earlier route that finishes late writes into its
  // detached view and never marks the page ready, so data-ready always names the screen on show.
  const seq = ++routed;
  delete main.dataset.ready;
  const id = (location.hash.match(/^#\/([a-z]+)/) || [])[1] || "collections";
  const screen = SCREENS.find((s) => s.id === id && (!s.shown || s.shown())) || SCREENS[0];
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.screen === screen.id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${screen.title} · Stratus console`;
  const view = el("div", { class: "view" }, heading(screen.title));
  replace(main, view);
  try {
    await screen.render(view);
  } catch (error) {
    append(view, [problem(error)]);
  }
  if (seq !== routed) return;
  main.dataset.ready = screen.id;
  document.getElementById("screen-title")?.focus();
}

// --- collections -----------------------------------------------------------------------------------

async function collectionsScreen(main) {
  if (!state.collections.length) { append(main, [el("p", {}, "No collections yet.")]); return; }
  const body = el("tbody");
  const table = el("table", {}, el("caption", {}, "Collections this key may read"),
    el("thead", {}, el("tr", {}, ["Collection", "Documents", "Chunks", "By status", "Last activity"].map((h) =>
      el("th", { scope: "col" }, h)))), body);
  append(main, [el("div", { class: "scroll" }, table)]);
  for (const name of state.collections) {
    const row = el("tr", {}, el("th", { scope: "row" }, el("a", { href: "#/documents",
      onclick: () => { state.collection = name; } }, name)), el("td", {}, "…"), el("td", {}, "…"), el("td"), el("td"));
    body.append(row);
    api("GET", `/v1/collections/${name}/stats`).then((s) => {
      replace(row.cells[1], s.documents); replace(row.cells[2], s.chunks);
      replace(row.cells[3], Object.entries(s.by_status).map(([k, v]) => `${k} ${v}`).join(", ") || "—");
      replace(row.cells[4], when(s.last_activity));
    }).catch(() => { replace(row.cells[1], "—"); replace(row.cells[2], "—"); });
  }
}

// --- documents -------------------------------------------------------------------------------------

async function documentsScreen(main) {
  append(main, [collectionPicker(route)]);
  if (!state.collection) { append(main, [el("p", {}, "Pick or name a collection.")]); return; }
  const status = el("p", { class: "hint", "aria-live": "polite", id: "doc-status" });
  const body = el("tbody", { id: "documents" });
  if (canWrite()) append(main, [uploader(() => refresh())]);
  append(main, [status, el("div", { class: "scroll" }, el("table", {}, el("caption", {}, `Documents of ${state.collection}`),
    el("thead", {}, el("tr", {}, ["Source", "Status", "Chunks", "Reason", "Updated", canWrite() ? "Actions" : null]
      .filter(Boolean).map((h) => el("th", { scope: "col" }, h)))), body))]);
  if (isAdmin() && state.who.collections.includes("*")) append(main, [await dlqPanel()]);

  async function refresh() {
    const page = await api("GET", `/v1/collections/${state.collection}/documents?limit=200`);
    replace(body, page.documents.map((d) => el("tr", { "data-doc": d.doc_id, "data-status": d.status },
      el("td", { class: "wrap" }, d.source), el("td", {}, el("span", { class: `badge s-${d.status.toLowerCase()}` }, d.status)),
      el("td", {}, d.chunk_count ?? "—"), el("td", { class: "wrap" }, d.error || d.detail || ""),
      el("td", {}, when(d.updated_at)),
      canWrite() ? el("td", {}, FINAL.has(d.status) && d.status !== "DELETED"
        ? el("button", { type: "button", class: "small", "aria-label": `Delete ${d.source}`, onclick: async () => {
          try { await api("DELETE", `/v1/collections/${state.collection}/documents/${d.doc_id}`); toast(`deleting ${d.source}`); refresh(); }
          catch (error) { toast(String(error), "error"); }
        } }, "Delete") : "") : null)));
    const busy = page.documents.filter((d) => !FINAL.has(d.status)).length;
    status.textContent = busy ? `${busy} document(s) in progress…` : `${page.documents.length} document(s)`;
    return busy;
  }
  await refresh();
  every(main, 1000, () => refresh().catch(() => {}));
}

function uploader(done) {
  const input = el("input", { id: "file", name: "file", type: "file", multiple: true });
  const zone = el("div", { class: "drop", id: "drop" }, el("label", { for: "file" }, "Upload files (or drop them here)"), input);
  async function send(files) {
    for (const file of files) {
      try {
        const ticket = await api("POST", `/v1/collections/${state.collection}/uploads`,
          { source: file.name, size: file.size, content_type: file.type || undefined });
        const put = await fetch(ticket.upload_url, { method: ticket.method, headers: ticket.headers, body: file });
        if (!put.ok) throw new Error(`upload of ${file.name} refused: ${put.status}`);
        toast(`uploaded ${file.name}`);
      } catch (error) {
        toast(String(error), "error");
      }
    }
    done();
  }
  input.addEventListener("change", () => send([...input.files]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); send([...e.dataTransfer.files]); });
  return zone;
}

async function dlqPanel() {
  const box = el("section", { class: "card", "aria-labelledby": "dlq-title" }, el("h2", { id: "dlq-title" }, "Dead-letter queues"));
  try {
    const { queues } = await api("GET", "/v1/dlq");
    append(box, [el("ul", {}, queues.map((q) => el("li", {}, `${q.stage}: ${q.dlq_depth ?? "—"} message(s) `,
      q.dlq_depth ? el("button", { type: "button", class: "small", onclick: async () => {
        const r = await api("POST", `/v1/dlq/${q.stage}/redrive`); toast(`${q.stage}: ${r.moved} message(s) redriven`);
      } }, `Redrive ${q.stage}`) : null)))]);
  } catch (error) { append(box, [problem(error)]); }
  return box;
}

// --- sources (issue 14 item 7's interface; the screen shows only when the API has those routes) ------

const items = (data, name) => (Array.isArray(data) ? data : (data && data[name]) || []);

async function sourcesScreen(main) {
  append(main, [collectionPicker(route)]);
  if (!state.collection) return;
  const base = `/v1/collections/${state.collection}/sources`;
  const list = el("div", { id: "sources" });
  if (canWrite()) {
    const kind = el("select", { id: "source-kind", name: "kind" }, el("option", { value: "web" }, "web"), el("option", { value: "s3" }, "s3"));
    const target = el("input", { id: "source-target", name: "target", required: true, autocomplete: "off",
      placeholder: "https://example.com/docs/ (web) or a bucket prefix (s3)" });
    const maxPages = el("input", { id: "source-max-pages", name: "max_pages", type: "number", min: 1, value: 1000 });
    append(main, [el("form", { class: "card grid", onsubmit: async (e) => {
      e.preventDefault();
      const body = kind.value === "web"
        ? { kind: "web", urls: [target.value.trim()], max_pages: Number(maxPages.value) }
        : { kind: "s3", prefix: target.value.trim() };
      try { await api("POST", base, body); toast("source added"); route(); }
      catch (error) { toast(String(error), "error"); }
    } }, el("label", { for: "source-kind" }, "Kind"), kind, el("label", { for: "source-target" }, "Start URL or prefix"), target,
    el("label", { for: "source-max-pages" }, "Max pages (web)"), maxPages, el("button", { type: "submit" }, "Add source"))]);
  }
  append(main, [list]);
  for (const source of items(await api("GET", base), "sources")) {
    const id = source.source_id;
    const names = source.kind === "s3" ? [source.prefix || ""] : (source.urls || []);
    const box = el("section", { class: "card", "aria-labelledby": `src-${id}` },
      el("h2", { id: `src-${id}` }, `${source.kind} source ${id}`),
      el("ul", {}, names.map((u) => el("li", {}, safeUrl(u) && /^https?:/i.test(u) ? el("a", { href: u, rel: "noopener noreferrer" }, u) : u))),
      canWrite() ? el("button", { type: "button", class: "small", onclick: async () => {
        try { const r = await api("POST", `${base}/${id}/syncs`); toast(`sync ${r.sync_id} started`); route(); }
        catch (error) { toast(String(error), "error"); }
      } }, "Sync now") : null);
    const syncs = el("div");
    append(box, [syncs]);
    append(list, [box]);
    try {
      const recent = items(await api("GET", `${base}/${id}/syncs`), "syncs").slice(0, 5);
      append(syncs, [recent.length ? el("ul", { class: "syncs" }, recent.map((y) => el("li", {},
        `${when(y.started_at)} ${y.state}: ` + Object.entries(y.counts || {}).map(([k, v]) => `${k} ${v}`).join(", "),
        (y.failures || []).length ? el("ul", {}, y.failures.slice(0, 10).map((f) => el("li", { class: "wrap" }, `${f.url}: ${f.reason}`))) : null)))
        : el("p", { class: "hint" }, "No syncs yet.")]);
    } catch (error) { append(syncs, [problem(error)]); }
  }
}

// --- search ----------------------------------------------------------------------------------------

async function searchScreen(main) {
  append(main, [collectionPicker(route)]);
  const query = el("input", { id: "q", name: "q", type: "search", required: true, autocomplete: "off" });
  const mode = el("select", { id: "mode", name: "mode" }, ["hybrid", "vector", "keyword"].map((m) => el("option", { value: m }, m)));
  const topK = el("input", { id: "top_k", name: "top_k", type: "number", min: 1, max: 100, value: 5 });
  const rerank = el("input", { id: "rerank", name: "rerank", type: "checkbox" });
  const mmr = el("input", { id: "mmr", name: "mmr", type: "checkbox" });
  const filters = el("textarea", { id: "filters", name: "filters", rows: 2, placeholder: '{"field": "year", "gte": 2020}' });
  const results = el("div", { id: "hits", "aria-live": "polite" });
  append(main, [el("form", { class: "card grid", role: "search", onsubmit: async (e) => {
    e.preventDefault();
    const body = { query: query.value, mode: mode.value, top_k: Number(topK.value), rerank: rerank.checked };
    if (mmr.checked) body.mmr = { lambda: 0.5 };
    try { if (filters.value.trim()) body.filters = JSON.parse(filters.value); }
    catch { toast("filters: not valid JSON", "error"); return; }
    replace(results, el("p", {}, "Searching…"));
    try {
      const found = await api("POST", `/v1/collections/${state.collection}/search`, body);
      renderHits(results, found, query.value);
    } catch (error) { replace(results, problem(error)); }
  } },
  el("label", { for: "q" }, "Query"), query, el("label", { for: "mode" }, "Mode"), mode,
  el("label", { for: "top_k" }, "top_k"), topK,
  el("span", { class: "checks" }, rerank, el("label", { for: "rerank" }, "Rerank"), mmr, el("label", { for: "mmr" }, "MMR")),
  el("label", { for: "filters" }, "Filters (JSON)"), filters,
  el("button", { type: "submit" }, "Search")), results]);
}

function renderHits(box, found, query) {
  const timings = Object.entries(found.timings_ms || {}).map(([k, v]) => `${k} ${v} ms`).join(" · ");
  replace(box, el("p", { class: "hint" }, `${found.hits.length} hit(s), ${found.mode}${found.reranked ? ", reranked" : ""}`
    + `${found.degraded.length ? `, degraded: ${found.degraded.join(", ")}` : ""} — ${timings}`),
  el("ol", { class: "hits" }, found.hits.map((h) => el("li", { class: "hit card", "data-chunk": h.chunk_id },
    el("h2", {}, h.title || h.source), el("p", { class: "meta" }, `${h.source}${h.section ? ` › ${h.section}` : ""}`
      + `${h.page ? ` · page/slide ${h.page}` : ""} · score ${h.score.toFixed(4)} · vector rank ${h.vector_rank ?? "—"}`
      + ` · keyword rank ${h.keyword_rank ?? "—"}${h.rerank_score != null ? ` · rerank ${h.rerank_score.toFixed(3)}` : ""}`),
    el("p", { class: "text" }, highlight(h.text, query)),
    Object.keys(h.metadata || {}).length ? el("p", { class: "meta" }, `metadata: ${JSON.stringify(h.metadata)}`) : null,
    thumbs({ target: "hit", query, chunk_ids: [h.chunk_id], doc_ids: [h.doc_id] }, h.title || h.source)))));
}

// --- feedback --------------------------------------------------------------------------------------

function thumbs(payload, label) {
  const comment = el("input", { name: "comment", placeholder: "Comment (optional)", "aria-label": `Comment on ${label}` });
  const box = el("div", { class: "feedback" });
  const send = (rating) => async () => {
    try {
      await api("POST", `/v1/collections/${state.collection}/feedback`, { ...payload, rating, comment: comment.value });
      replace(box, el("span", { class: "hint", "data-feedback": "sent" }, rating > 0 ? "Thanks: marked helpful." : "Thanks: marked not helpful."));
    } catch (error) { toast(String(error), "error"); }
  };
  return append(box, [el("button", { type: "button", class: "small", "aria-label": `Helpful: ${label}`, onclick: send(1) }, "Helpful"),
    el("button", { type: "button", class: "small", "aria-label": `Not helpful: ${label}`, onclick: send(-1) }, "Not helpful"), comment]);
}

// --- chat ------------------------------------------------------------------------------------------

const chat = { conversationId: null, log: [] };

function newConversation() {
  chat.conversationId = crypto.randomUUID().replaceAll("-", "");
  chat.log = [];
}

async function chatScreen(main) {
  append(main, [collectionPicker(() => { newConversation(); route(); })]);
  if (!chat.conversationId) newConversation();
  const log = el("div", { id: "chat-log", class: "chat-log", "aria-live": "polite" });
  const question = el("textarea", { id: "question", name: "question", rows: 2, required: true });
  const passage = el("section", { id: "passage", class: "card passage", hidden: true, "aria-labelledby": "passage-title", tabindex: "-1" });
  append(main, [log, el("form", { class: "card ask", onsubmit: async (e) => {
    e.preventDefault();
    const text = question.value.trim();
    if (!text) return;
    question.value = "";
    await ask(text, log, passage);
  } }, el("label", { for: "question" }, "Question"), question,
  el("div", {}, el("button", { type: "submit" }, "Ask"), el("button", { type: "button", class: "secondary",
    onclick: () => { newConversation(); replace(log); toast("new conversation"); } }, "New conversation"))), passage]);
  question.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); e.target.form.requestSubmit(); } });
  for (const entry of chat.log) log.append(entry);
}

async function ask(text, log, passage) {
  const you = el("div", { class: "msg user" }, el("span", { class: "who-said" }, "You"), el("p", {}, text));
  const answer = el("p", { class: "answer", "data-deltas": "0" });
  const extra = el("div");
  const bot = el("div", { class: "msg assistant" }, el("span", { class: "who-said" }, "Stratus"), answer, extra);
  log.append(you, bot);
  chat.log.push(you, bot);
  let citations = [];
  let full = "";
  const base = state.config.stream_url || root;
  try {
    await stream(`/v1/collections/${state.collection}/chat`, { messages: [{ role: "user", content: text }], stream: true,
      conversation_id: chat.conversationId }, (name, data) => {
      if (name === "delta") {
        full += data.text;
        answer.append(document.createTextNode(data.text));
        answer.dataset.deltas = String(Number(answer.dataset.deltas) + 1);
      } else if (name === "citations") {
        citations = data.citations;
      } else if (name === "error") {
        append(extra, [el("p", { class: "error", role: "alert" }, `${data.error.kind}: ${data.error.message}`)]);
      } else if (name === "done") {
        replace(answer, withCitations(full, citations, passage));
        answer.dataset.done = "true";
        append(extra, [citations.length ? el("ol", { class: "citations", "aria-label": "Citations" }, citations.map((c) =>
          el("li", {}, citeButton(c, passage, `[${c.n}] ${c.title || c.source}${c.page ? ` · page/slide ${c.page}` : ""}`)))) : null,
        el("p", { class: "meta" }, `${data.provider}${data.model ? ` (${data.model})` : ""} · ${data.timings?.total_ms ?? "?"} ms`
          + `${data.query_rewrite !== "none" ? ` · query: ${data.query}` : ""}`),
        thumbs({ target: "answer", query: text, answer: full, chunk_ids: citations.map((c) => c.chunk_id),
          doc_ids: citations.map((c) => c.doc_id), conversation_id: chat.conversationId }, "this answer")]);
      }
    }, base);
  } catch (error) { append(extra, [problem(error)]); }
}

function withCitations(text, citations, passage) {
  const byN = new Map(citations.map((c) => [String(c.n), c]));
  return text.split(/\[(\d+)\]/).map((part, i) => {
    if (i % 2 === 0) return part;
    const c = byN.get(part);
    return c ? citeButton(c, passage, `[${part}]`, true) : `[${part}]`;
  });
}

function citeButton(c, passage, label, inline = false) {
  return el("button", { type: "button", class: inline ? "cite" : "small link", "data-cite": c.n,
    "aria-label": inline ? `Citation ${c.n}: ${c.title || c.source}` : undefined,
    onclick: () => openPassage(c, passage) }, label);
}

async function openPassage(c, passage) {
  passage.hidden = false;
  replace(passage, el("h2", { id: "passage-title" }, `[${c.n}] ${c.title || c.source}`), el("p", {}, "Loading…"));
  try {
    const chunk = await api("GET", `/v1/collections/${state.collection}/chunks/${encodeURIComponent(c.chunk_id)}`);
    const link = safeUrl(chunk.source) && /^https?:/i.test(chunk.source) ? chunk.source : null;
    replace(passage, el("h2", { id: "passage-title" }, `[${c.n}] ${chunk.title || chunk.source}`),
      el("p", { class: "meta" }, `${chunk.source}${chunk.section ? ` › ${chunk.section}` : ""}${chunk.page ? ` · page/slide ${chunk.page}` : ""}`),
      link ? el("p", {}, el("a", { href: link, rel: "noopener noreferrer", target: "_blank" }, "Open the source")) : null,
      el("blockquote", { class: "text", id: "passage-text" }, chunk.text),
      el("button", { type: "button", class: "small secondary", onclick: () => { passage.hidden = true; } }, "Close"));
  } catch (error) { replace(passage, problem(error)); }
  passage.focus();
}

// --- operations ------------------------------------------------------------------------------------

async function operationsScreen(main) {
  const data = await api("GET", "/v1/operations");
  const stat = (label, value, id) => el("div", { class: "stat", "data-metric": id }, el("span", { class: "label" }, label),
    el("span", { class: "value" }, String(value)));
  const lat = data.metrics.latency_ms;
  const totals = data.metrics.totals;
  const ms = (v) => `${Math.round(v)} ms`;
  append(main, [el("p", { class: "hint" }, `Scope: ${data.scope}. Since ${when(data.metrics.since)}.`),
    el("section", { "aria-labelledby": "q-title", class: "card" }, el("h2", { id: "q-title" }, "Queue depth and dead-letter queue depth"),
      el("div", { class: "stats" }, data.queues.flatMap((q) => [stat(`${q.stage} queue`, q.depth, `${q.stage}-queue`),
        stat(`${q.stage} DLQ`, q.dlq_depth ?? "—", `${q.stage}-dlq`)]))),
    el("section", { "aria-labelledby": "l-title", class: "card" }, el("h2", { id: "l-title" }, "Latency (p50 / p95)"),
      el("div", { class: "stats" }, ["SearchLatencyMs", "ChatLatencyMs", "IngestLatencyMs"].map((name) =>
        stat(`${name} (${lat[name].samples})`, `${ms(lat[name].p50)} / ${ms(lat[name].p95)}`, name)))),
    el("section", { "aria-labelledby": "d-title", class: "card" }, el("h2", { id: "d-title" }, "Documents per status"),
      el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["Collection", "QUEUED", "FETCHED", "EMBEDDED", "INDEXED", "FAILED", "DELETED"].map((h) =>
        el("th", { scope: "col" }, h)))), el("tbody", {}, Object.entries(data.documents).map(([c, counts]) => el("tr", {}, el("th", { scope: "row" }, c),
        ["QUEUED", "FETCHED", "EMBEDDED", "INDEXED", "FAILED", "DELETED"].map((s) => el("td", {}, counts[s] || 0)))))))),
    el("section", { "aria-labelledby": "t-title", class: "card" }, el("h2", { id: "t-title" }, "Totals (metric names as on the dashboard)"),
      el("div", { class: "stats" }, Object.entries(totals).map(([k, v]) => stat(k, Math.round(v * 100) / 100, k))))]);
  every(main, 10000, () => route());
}

// --- keys ------------------------------------------------------------------------------------------

async function keysScreen(main) {
  const name = el("input", { id: "key-name", name: "name", required: true, autocomplete: "off" });
  const collections = el("input", { id: "key-collections", name: "collections", required: true, value: state.collection || "*" });
  const role = el("select", { id: "key-role", name: "role" }, ["read", "write", "admin"].map((r) => el("option", { value: r }, r)));
  const rate = el("input", { id: "key-rate", name: "rate", type: "number", min: 0, step: "any", placeholder: "server default" });
  const secret = el("div", { id: "secret", "aria-live": "polite" });
  const body = el("tbody", { id: "keys" });
  append(main, [el("form", { class: "card grid", onsubmit: async (e) => {
    e.preventDefault();
    const payload = { name: name.value, collections: collections.value.split(",").map((c) => c.trim()).filter(Boolean), roles: [role.value] };
    if (rate.value !== "") payload.rate_limit_per_s = Number(rate.value);
    try {
      const made = await api("POST", "/v1/keys", payload);
      replace(secret, el("div", { class: "card secret", role: "alert" }, el("p", {}, "The key, shown this once — copy it now:"),
        el("code", { id: "new-key" }, made.key)));
      await list();
    } catch (error) { replace(secret, problem(error)); }
  } }, el("label", { for: "key-name" }, "Name"), name, el("label", { for: "key-collections" }, "Collections (comma-separated, * for all)"),
  collections, el("label", { for: "key-role" }, "Role"), role, el("label", { for: "key-rate" }, "Requests per second"), rate,
  el("button", { type: "submit" }, "Create key")), secret,
  el("div", { class: "scroll" }, el("table", {}, el("caption", {}, "Keys"), el("thead", {}, el("tr", {},
    ["Key id", "Name", "Collections", "Roles", "Rate", "Created", "Revoked", "Actions"].map((h) => el("th", { scope: "col" }, h)))), body))]);
  async function list() {
    const { keys } = await api("GET", "/v1/keys");
    replace(body, keys.map((k) => el("tr", {}, el("td", {}, el("code", {}, k.key_id)), el("td", {}, k.name), el("td", {}, k.collections.join(", ")),
      el("td", {}, k.roles.join(", ")), el("td", {}, k.rate_limit_per_s ?? "default"), el("td", {}, when(k.created_at)), el("td", {}, when(k.revoked_at)),
      el("td", {}, k.revoked_at || k.key_id === state.who.key_id ? "" : el("button", { type: "button", class: "small", "aria-label": `Revoke ${k.name}`,
        onclick: async () => { await api("DELETE", `/v1/keys/${k.key_id}`); toast(`revoked ${k.key_id}`); list(); } }, "Revoke")))));
  }
  await list();
}

// --- boot ------------------------------------------------------------------------------------------

async function boot() {
  try { state.config = await (await fetch("config.json")).json(); } catch { state.config = {}; }
  // A sign-in link (`stratus up` prints one) carries the key in the fragment, which never reaches a server.
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (fragment.get("key")) {
    session.key = fragment.get("key");
    history.replaceState(null, "", location.pathname + location.search);
  }
  window.addEventListener("hashchange", route);
  if (session.key) await start();
  else signInScreen();
}

boot();
