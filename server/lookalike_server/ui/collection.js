// One collection: browse and search it (tab "search"), add records (tab "upload"), its
// near-duplicate groups (tab "duplicates") and its settings (tab "about").

import { api, imageObjectUrl, path } from "./api.js";
import { describeKinds, errorSlot, fill, formatBytes, formatCount, formatValue, h, imageUrl, plural } from "./dom.js";
import { UploadPanel } from "./upload.js";

const TABS = [
  ["search", "Search"],
  ["upload", "Add records"],
  ["duplicates", "Near-duplicates"],
  ["about", "About"],
];
/** Fields every hit carries that are not the record's metadata. */
const HIT_FIELDS = new Set(["_id", "distance", "_url", "_group", "is_duplicate"]);
/** Metadata fields shown before "more fields". */
const SHOWN_FIELDS = 4;
const PAGE_SIZES = [12, 24, 48, 96];

export class CollectionView {
  constructor(root, name, { admin }) {
    this.root = root;
    this.name = name;
    this.admin = admin;
    this.alive = true;
    this.info = null;
    this.panels = {};
    this.tabs = {};
  }

  destroy() {
    this.alive = false;
    this.search?.destroy();
    this.upload?.destroy();
  }

  async open(tab) {
    const error = errorSlot("collection-error");
    fill(this.root, h("section", { class: "page" }, h("p", { class: "muted" }, "Loading…"), error.node));
    try {
      this.info = await api("GET", path("collections", this.name));
    } catch (failure) {
      fill(this.root, h("section", { class: "page" }, h("h1", {}, this.name), error.node, h("p", {}, h("a", { href: "#/" }, "All collections"))));
      error.show(failure);
      return;
    }
    if (!this.alive) return;
    this.summary = h("p", { class: "muted summary", id: "collection-summary" });
    const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": "Collection" });
    for (const [key, label] of TABS) {
      const href = `#/c/${encodeURIComponent(this.name)}${key === "search" ? "" : `/${key}`}`;
      this.tabs[key] = h("a", { role: "tab", href, id: `tab-${key}`, "aria-controls": `panel-${key}` }, label);
      tablist.append(this.tabs[key]);
      this.panels[key] = h("div", { role: "tabpanel", id: `panel-${key}`, "aria-labelledby": `tab-${key}`, hidden: true });
    }
    fill(this.root,
      h("section", { class: "page collection", dataset: { collection: this.name } },
        h("div", { class: "page-head" },
          h("div", {},
            h("h1", {}, this.name, " ", h("span", { class: "badge type" }, this.info.type)),
            this.summary),
        ),
        tablist,
        Object.values(this.panels),
      ),
    );
    this.describe();
    this.search = new SearchPanel(this);
    this.upload = new UploadPanel(this);
    fill(this.panels.search, this.search.node);
    fill(this.panels.upload, this.upload.node);
    this.showTab(tab);
    this.search.run({ kind: "browse" });
  }

  describe() {
    const info = this.info;
    fill(this.summary,
      plural(info.count, "record"), " · search by ", describeKinds(info.query_kinds),
      info.product_id_field ? ` · products by ${info.product_id_field}` : "");
  }

  /** Reads the collection's description again (its count changes as records come in). */
  async refresh() {
    try {
      this.info = await api("GET", path("collections", this.name));
      if (this.alive) this.describe();
    } catch {
      // the summary keeps its last figures
    }
  }

  showTab(tab) {
    const chosen = this.panels[tab] ? tab : "search";
    for (const [key] of TABS) {
      const selected = key === chosen;
      this.tabs[key].setAttribute("aria-selected", String(selected));
      this.panels[key].hidden = !selected;
    }
    if (chosen === "duplicates" && !this.duplicates) {
      this.duplicates = duplicatesPanel(this);
      fill(this.panels.duplicates, this.duplicates);
    }
    if (chosen === "about") fill(this.panels.about, aboutPanel(this));
  }

  /** Switches to the search tab and finds the records nearest to a record. */
  moreLikeThis(id, url) {
    if (window.location.hash !== this.tabs.search.getAttribute("href")) {
      window.location.hash = this.tabs.search.getAttribute("href");
    }
    this.search.run({ kind: "id", id, preview: url });
    this.search.setMode("id", id);
    this.search.heading.scrollIntoView({ block: "start" });
  }
}

// -- hits as cards ---------------------------------------------------------------------------

function placeholder(id, reason) {
  return h("span", { class: "placeholder" }, h("span", { class: "placeholder-id" }, id), h("span", { class: "placeholder-note" }, reason));
}

/** The thumbnail of a record: its `_url` image, else its stored image (collections that keep
 * images), else its `_id`. */
function thumbnail(record, view) {
  const url = imageUrl(record._url);
  if (!url && view?.info?.store_images && !record._id.includes("/")) {
    const image = h("img", { alt: "", decoding: "async" });
    const slot = h("span", { class: "stored-image" }, placeholder(record._id, "loading image"));
    imageObjectUrl(path("collections", view.name, "records", record._id, "image"))
      .then((objectUrl) => {
        image.addEventListener("load", () => URL.revokeObjectURL(objectUrl), { once: true });
        image.src = objectUrl;
        slot.replaceWith(image);
      })
      .catch(() => slot.replaceWith(placeholder(record._id, "no stored image")));
    return slot;
  }
  if (!url) return placeholder(record._id, "no image URL");
  const image = h("img", { src: url, alt: "", loading: "lazy", decoding: "async", referrerpolicy: "no-referrer" });
  image.addEventListener("error", () => image.replaceWith(placeholder(record._id, "image did not load")), { once: true });
  return image;
}

/** A colour palette (a list of {color, weight}) as a strip of swatches, or null. */
function palette(value) {
  if (!Array.isArray(value) || !value.length) return null;
  if (!value.every((item) => item && typeof item.color === "string" && /^#[0-9a-f]{3,6}$/i.test(item.color))) return null;
  return h("span", { class: "palette", title: value.map((item) => `${item.color} ${Math.round((item.weight ?? 0) * 100)}%`).join(", ") },
    value.map((item) => h("span", { style: { background: item.color, flexGrow: String(Math.max(Number(item.weight) || 0, 0.02)) } })));
}

function metadata(record) {
  const entries = Object.entries(record).filter(([key]) => !HIT_FIELDS.has(key));
  // The record's own fields first; the type's derived ones (`_colors`...) after them.
  entries.sort(([a], [b]) => Number(a.startsWith("_")) - Number(b.startsWith("_")));
  const row = ([key, value]) => [
    h("dt", { class: key.startsWith("_") ? "derived" : null }, key),
    h("dd", { title: typeof value === "string" ? value : JSON.stringify(value) }, palette(value) ?? formatValue(value)),
  ];
  if (!entries.length) return h("p", { class: "muted none" }, "no metadata");
  const shown = h("dl", { class: "meta" }, entries.slice(0, SHOWN_FIELDS).map(row));
  if (entries.length <= SHOWN_FIELDS) return shown;
  return [shown, h("details", { class: "more" },
    h("summary", {}, `${entries.length - SHOWN_FIELDS} more`),
    h("dl", { class: "meta" }, entries.slice(SHOWN_FIELDS).map(row)))];
}

function hitCard(record, view) {
  const hasDistance = typeof record.distance === "number";
  return h("article", { class: "hit", dataset: { id: record._id } },
    h("button", {
      type: "button", class: "thumb", title: "More like this", "aria-label": `More like this: ${record._id}`,
      onclick: () => view.moreLikeThis(record._id, imageUrl(record._url)),
    }, thumbnail(record, view)),
    h("div", { class: "hit-body" },
      h("div", { class: "hit-head" },
        h("span", { class: "hit-id", title: record._id }, record._id),
        hasDistance ? h("span", { class: "distance", title: "Distance to the query: smaller is closer" }, record.distance.toFixed(3)) : null,
      ),
      record.is_duplicate ? h("span", { class: "badge dup" }, "near-duplicate") : null,
      metadata(record),
    ),
  );
}

/** A `_group` value (JSON text of the product id) as people read it. */
function groupLabel(value) {
  if (value === null || value === undefined) return "no product";
  try {
    const decoded = JSON.parse(value);
    return typeof decoded === "string" ? decoded : JSON.stringify(decoded);
  } catch {
    return String(value);
  }
}

/** Hits that belong together (a product, near-duplicates) in one box. */
function groupBox(title, hits, view, key) {
  const grid = h("div", { class: "hit-grid" }, hits.map((hit) => hitCard(hit, view)));
  grid.style.gridTemplateColumns = `repeat(${Math.min(hits.length, 4)}, var(--card))`;
  return h("section", { class: "group", dataset: key === undefined ? {} : { group: key } },
    h("h3", {}, title, h("span", { class: "muted" }, ` · ${hits.length}`)),
    grid);
}

// -- the search tab --------------------------------------------------------------------------

class SearchPanel {
  constructor(view) {
    this.view = view;
    this.info = view.info;
    this.query = { kind: "browse" };
    this.page = 0;
    this.cursors = [null];
    this.sequence = 0;
    this.previewUrl = null;
    this.kinds = new Set(this.info.query_kinds);
    this.errors = {
      image: errorSlot("image-error"),
      id: errorSlot("id-error"),
      text: errorSlot("text-error"),
      colors: errorSlot("colors-error"),
      filter: errorSlot("filter-error"),
      results: errorSlot("results-error"),
    };
    this.node = this.build();
  }

  destroy() {
    this.sequence += 1; // answers still on their way are dropped
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
  }

  build() {
    const modes = [];
    if (this.kinds.has("image")) modes.push(["image", "Image", this.imagePane()]);
    modes.push(["id", "Record", this.idPane()]);
    if (this.kinds.has("text")) modes.push(["text", "Text", this.textPane()]);
    if (this.kinds.has("colors")) modes.push(["colors", "Colour", this.colorsPane()]);
    this.modeButtons = {};
    this.modePanes = {};
    const switcher = h("div", { class: "segmented", role: "group", "aria-label": "Search by" });
    for (const [key, label, pane] of modes) {
      this.modeButtons[key] = h("button", { type: "button", id: `mode-${key}`, "aria-pressed": "false", onclick: () => this.setMode(key) }, label);
      switcher.append(this.modeButtons[key]);
      this.modePanes[key] = pane;
    }

    this.filter = h("textarea", {
      id: "filter", rows: 3, spellcheck: "false", class: "mono", "aria-describedby": "filter-help filter-error",
      placeholder: '{"category": "shoes", "price": {"$lt": 50}}',
    });
    this.filter.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) this.rerun();
    });
    this.group = h("input", {
      type: "checkbox", id: "group-by-product",
      onchange: () => {
        this.groupSize.disabled = !this.group.checked;
        this.rerun();
      },
    });
    this.groupSize = h("input", { type: "number", id: "group-size", min: 1, max: 100, value: "3", disabled: true, onchange: () => this.rerun() });
    this.pageSize = h("select", { id: "page-size", onchange: () => this.rerun() },
      PAGE_SIZES.map((size) => h("option", { value: size, selected: size === 24 }, String(size))));

    const grouping = this.info.product_id_field
      ? h("div", { class: "option-row" },
          h("label", { class: "check" }, this.group, " Group by product"),
          h("label", { class: "inline muted" }, "best ", this.groupSize, " of each"))
      : null;
    // Wide screens show the options; on a phone they fold away under the query (and unfold
    // when the filter has something to say).
    this.options = h("details", { class: "options", open: window.matchMedia("(min-width: 901px)").matches },
      h("summary", { id: "options-toggle" }, "Filter and options"),
      h("div", { class: "field" },
        h("label", { for: "filter" }, "Filter"),
        this.filter,
        h("p", { class: "hint", id: "filter-help" }, "MongoDB style: ", h("code", {}, "$eq $ne $in $nin $gt $gte $lt $lte $exists $and $or $not"), ". Empty: no filter."),
        this.errors.filter.node,
        h("button", { type: "button", id: "apply-filter", onclick: () => this.rerun() }, "Apply filter"),
      ),
      grouping,
      h("div", { class: "option-row" }, h("label", { class: "inline", for: "page-size" }, "Per page "), this.pageSize),
    );

    const aside = h("aside", { class: "query panel", "aria-label": "Query" },
      h("h2", { class: "small" }, "Search by"),
      switcher,
      Object.values(this.modePanes),
      h("div", { class: "browse-buttons" },
        h("button", { type: "button", id: "browse-all", onclick: () => this.run({ kind: "browse" }) }, "All records"),
        h("button", { type: "button", id: "random", onclick: () => this.run({ kind: "random" }) }, "Random"),
      ),
      h("hr"),
      this.options,
    );

    this.heading = h("div", { class: "results-head", id: "results-head", "aria-live": "polite" });
    this.hits = h("div", { class: "hits", id: "hits" });
    this.prev = h("button", { type: "button", id: "prev-page", onclick: () => this.go(this.page - 1) }, "← Previous");
    this.next = h("button", { type: "button", id: "next-page", onclick: () => this.go(this.page + 1) }, "Next →");
    this.pageLabel = h("span", { class: "page-label", id: "page-label" });
    this.pager = h("nav", { class: "pager", "aria-label": "Pages" }, this.prev, this.pageLabel, this.next);

    const first = modes[0][0];
    this.setMode(first);
    return h("div", { class: "search-layout" },
      aside,
      h("section", { class: "results", "aria-label": "Results" }, this.heading, this.errors.results.node, this.hits, this.pager),
    );
  }

  setMode(key, value) {
    for (const [name, button] of Object.entries(this.modeButtons)) {
      button.setAttribute("aria-pressed", String(name === key));
      this.modePanes[name].hidden = name !== key;
    }
    if (key === "id" && value !== undefined) this.idInput.value = value;
  }

  imagePane() {
    const file = h("input", { type: "file", id: "query-file", accept: "image/*", class: "visually-hidden" });
    file.addEventListener("change", () => {
      if (file.files?.length) this.searchFile(file.files[0]);
      file.value = "";
    });
    const drop = h("label", { class: "drop", for: "query-file", id: "query-drop" },
      h("strong", {}, "Drop an image here"),
      h("span", {}, "or choose a file, or paste one"),
    );
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (event) => {
        event.preventDefault();
        drop.classList.add("over");
      });
    }
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const dropped = [...(event.dataTransfer?.files ?? [])].find((f) => f.type.startsWith("image/"));
      if (dropped) this.searchFile(dropped);
      else {
        const url = event.dataTransfer?.getData("text/uri-list") || event.dataTransfer?.getData("text/plain");
        if (url) this.run({ kind: "url", url: url.trim() });
        else this.errors.image.show({ code: "not_an_image", message: "That was not an image file." });
      }
    });
    // Pasting an image anywhere on the search tab searches by it.
    this.view.panels.search.addEventListener("paste", (event) => {
      const pasted = [...(event.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
      if (pasted && this.modePanes.image) {
        event.preventDefault();
        this.setMode("image");
        this.searchFile(pasted);
      }
    });
    const url = h("input", { type: "url", id: "query-url", placeholder: "https://example.com/photo.jpg", "aria-label": "Image URL", autocomplete: "off" });
    const form = h("form", { class: "inline-form" }, url, h("button", { type: "submit" }, "Search"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (url.value.trim()) this.run({ kind: "url", url: url.value.trim() });
    });
    return h("div", { class: "mode-pane" }, file, drop, h("p", { class: "or" }, "or an image URL"), form, this.errors.image.node);
  }

  idPane() {
    this.idInput = h("input", { id: "query-id", placeholder: "a record's _id", "aria-label": "Record _id", autocomplete: "off", required: true });
    const form = h("form", { class: "inline-form" }, this.idInput, h("button", { type: "submit" }, "Search"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (this.idInput.value.trim()) this.run({ kind: "id", id: this.idInput.value.trim() });
    });
    return h("div", { class: "mode-pane" }, h("p", { class: "hint" }, "The records most like a stored one. Clicking any result does the same."), form, this.errors.id.node);
  }

  textPane() {
    const text = h("input", { id: "query-text", placeholder: "a red sports car", "aria-label": "Text", autocomplete: "off", required: true, maxlength: 2000 });
    const form = h("form", { class: "inline-form" }, text, h("button", { type: "submit" }, "Search"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (text.value.trim()) this.run({ kind: "text", text: text.value.trim() });
    });
    return h("div", { class: "mode-pane" }, h("p", { class: "hint" }, "Describe the picture in a few words."), form, this.errors.text.node);
  }

  colorsPane() {
    const list = h("div", { class: "colour-list", id: "colour-list" });
    const addColour = (value = "#d9480f") => {
      if (list.children.length >= 8) return;
      const picker = h("input", { type: "color", value, "aria-label": "Colour" });
      const weight = h("input", { type: "range", min: 1, max: 10, value: "5", "aria-label": "Weight" });
      const row = h("div", { class: "colour-row" }, picker, weight,
        h("button", { type: "button", class: "link", "aria-label": "Remove colour", onclick: () => list.children.length > 1 && row.remove() }, "✕"));
      list.append(row);
    };
    addColour();
    const form = h("form", { class: "stack" }, list,
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => addColour("#1c7ed6") }, "Add colour"),
        h("button", { type: "submit", id: "colour-search" }, "Search")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const colors = [...list.querySelectorAll(".colour-row")].map((row) => ({
        color: row.querySelector("input[type=color]").value,
        weight: Number(row.querySelector("input[type=range]").value),
      }));
      this.run({ kind: "colors", colors });
    });
    return h("div", { class: "mode-pane" }, h("p", { class: "hint" }, "Images whose main colours are these, in these proportions."), form, this.errors.colors.node);
  }

  searchFile(file) {
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = URL.createObjectURL(file);
    this.run({ kind: "upload", file, preview: this.previewUrl });
  }

  /** The filter box as an object (null when empty); shows what is wrong and throws otherwise. */
  readFilter() {
    const text = this.filter.value.trim();
    if (!text) return null;
    let value;
    try {
      value = JSON.parse(text);
    } catch (failure) {
      throw { code: "invalid_filter", message: `The filter is not valid JSON: ${failure.message}. A filter looks like {"category": "shoes"}.` };
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw { code: "invalid_filter", message: 'A filter is a JSON object, such as {"category": "shoes"}.' };
    }
    return Object.keys(value).length ? value : null;
  }

  rerun() {
    this.run(this.query);
  }

  go(page) {
    if (page < 0) return;
    this.run(this.query, page);
  }

  slotFor(kind) {
    return { id: "id", url: "image", upload: "image", text: "text", colors: "colors" }[kind] ?? "results";
  }

  /** Runs a query (a new one starts on page 0) and shows its results. */
  async run(query, page = 0) {
    if (query !== this.query) this.cursors = [null];
    this.query = query;
    const sequence = ++this.sequence;
    for (const slot of Object.values(this.errors)) slot.clear();
    let filter;
    try {
      filter = this.readFilter();
    } catch (failure) {
      this.options.open = true;
      this.errors.filter.show(failure);
      return;
    }
    const limit = Number(this.pageSize.value);
    const grouped = Boolean(this.info.product_id_field && this.group.checked);
    const options = { limit, offset: page * limit };
    if (filter) options.filter = filter;
    if (grouped) {
      options.group_by = this.info.product_id_field;
      options.group_size = Math.min(Math.max(Number(this.groupSize.value) || 1, 1), 100);
    }
    this.hits.setAttribute("aria-busy", "true");
    const started = performance.now();
    let answer;
    try {
      answer = await this.fetch(query, page, limit, filter, options);
    } catch (failure) {
      if (sequence !== this.sequence) return;
      this.hits.removeAttribute("aria-busy");
      if (failure.code === "invalid_filter") this.options.open = true;
      this.errors[failure.code === "invalid_filter" ? "filter" : this.slotFor(query.kind)].show(failure);
      return;
    }
    if (sequence !== this.sequence) return;
    this.page = page;
    this.hits.removeAttribute("aria-busy");
    this.render(query, answer, { limit, grouped, filtered: Boolean(filter), took: answer.took_ms ?? performance.now() - started });
  }

  async fetch(query, page, limit, filter, options) {
    const name = this.view.name;
    switch (query.kind) {
      case "browse": {
        const cursor = this.cursors[page];
        if (cursor === undefined) throw { code: "invalid_page", message: "Go back to the first page." };
        const answer = await api("GET", path("collections", name, "records"), {
          query: { limit, cursor, filter: filter ? JSON.stringify(filter) : null },
        });
        this.cursors[page + 1] = answer.next_cursor ?? undefined;
        return { hits: answer.records, more: answer.next_cursor !== null };
      }
      case "random": {
        const answer = await api("POST", path("collections", name, "records", "random"), { json: { count: Math.min(limit, 1000), filter } });
        return { hits: answer.records, more: false };
      }
      case "upload": {
        const form = new FormData();
        form.append("file", query.file, query.file.name || "image");
        form.append("options", JSON.stringify(options));
        return this.searched(await api("POST", path("collections", name, "search", "upload"), { form }), options);
      }
      case "id":
        return this.searched(await api("POST", path("collections", name, "search"), { json: { ...options, query: { _id: query.id } } }), options);
      case "url":
        return this.searched(await api("POST", path("collections", name, "search"), { json: { ...options, query: { _url: query.url } } }), options);
      case "text":
        return this.searched(await api("POST", path("collections", name, "search"), { json: { ...options, text: query.text } }), options);
      case "colors":
        return this.searched(await api("POST", path("collections", name, "search"), { json: { ...options, colors: query.colors } }), options);
      default:
        throw new Error(`unknown query ${query.kind}`);
    }
  }

  /** A search answer with whether a next page may hold more (a full page came back). */
  searched(answer, options) {
    const count = options.group_by ? new Set(answer.hits.map((hit) => hit._group)).size : answer.hits.length;
    return { hits: answer.hits, took_ms: answer.took_ms, more: count >= options.limit };
  }

  describeQuery(query) {
    switch (query.kind) {
      case "browse": return ["All records"];
      case "random": return ["Random records"];
      case "id": return ["Most like record ", h("q", { class: "query-id" }, query.id)];
      case "url": return ["Most like ", h("span", { class: "query-url", title: query.url }, formatValue(query.url, 60))];
      case "upload": return ["Most like ", h("q", {}, query.file.name || "the pasted image")];
      case "text": return ["Most like ", h("q", {}, query.text)];
      case "colors": return ["Most like the colours ", query.colors.map((c) => h("span", { class: "swatch", title: c.color, style: { background: c.color } }))];
      default: return [""];
    }
  }

  render(query, answer, { limit, grouped, filtered, took }) {
    const preview = query.preview ?? (query.kind === "url" ? imageUrl(query.url) : null);
    const count = answer.hits.length;
    const search = !["browse", "random"].includes(query.kind);
    fill(this.heading,
      preview ? h("img", { class: "query-preview", src: preview, alt: "The query image" }) : null,
      h("div", {},
        h("h2", { id: "results-title" }, this.describeQuery(query)),
        h("p", { class: "muted", id: "results-count" },
          count ? `${plural(count, search ? "hit" : "record")}${this.page ? ` on page ${this.page + 1}` : ""}` : "Nothing found",
          filtered ? " · filtered" : "",
          grouped && search ? " · grouped by product" : "",
          search ? ` · ${took.toFixed(1)} ms` : "",
          search ? h("span", { class: "hint" }, " · distance: smaller is closer") : null,
        ),
      ),
    );
    if (!count) {
      const empty = this.info.count === 0
        ? ["This collection is empty. ", h("a", { href: this.view.tabs.upload.getAttribute("href") }, "Add records"), "."]
        : [filtered ? "No record passes the filter." : "No records here."];
      fill(this.hits, h("div", { class: "empty" }, h("p", {}, empty)));
    } else if (grouped && search) {
      const groups = [];
      for (const hit of answer.hits) {
        const last = groups[groups.length - 1];
        if (last && last.key === hit._group) last.hits.push(hit);
        else groups.push({ key: hit._group, hits: [hit] });
      }
      fill(this.hits, h("div", { class: "groups" }, groups.map((group, i) =>
        groupBox(`${this.page * limit + i + 1}. Product “${groupLabel(group.key)}”`, group.hits, this.view, groupLabel(group.key)))));
    } else {
      fill(this.hits, h("div", { class: "hit-grid" }, answer.hits.map((hit) => hitCard(hit, this.view))));
    }
    const paged = query.kind !== "random";
    this.pager.hidden = !paged || (this.page === 0 && !answer.more);
    this.prev.disabled = this.page === 0;
    this.next.disabled = !answer.more;
    this.pageLabel.textContent = `Page ${this.page + 1}`;
  }
}

// -- near-duplicates -------------------------------------------------------------------------

const MAX_GROUPS_SHOWN = 100;

function duplicatesPanel(view) {
  const error = errorSlot("duplicates-error");
  const threshold = h("input", { id: "duplicate-threshold", type: "number", min: 0, step: "any", placeholder: "the type's own", "aria-describedby": "duplicates-error" });
  const results = h("div", { id: "duplicate-groups", class: "duplicate-groups" });
  const button = h("button", { type: "submit", class: "primary", id: "find-duplicates" }, "Find near-duplicates");
  const form = h("form", { class: "threshold-form" },
    h("div", { class: "field" }, h("label", { for: "duplicate-threshold" }, "Distance threshold"), threshold),
    button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.clear();
    button.disabled = true;
    fill(results, h("p", { class: "muted" }, "Looking for near-duplicates…"));
    try {
      const body = threshold.value === "" ? {} : { threshold: Number(threshold.value) };
      const { groups } = await api("POST", path("collections", view.name, "near-duplicates"), { json: body });
      const shown = groups.slice(0, MAX_GROUPS_SHOWN);
      const ids = [...new Set(shown.flat())].slice(0, 1000);
      const records = ids.length ? (await api("POST", path("collections", view.name, "records", "get"), { json: { ids } })).records : [];
      const byId = new Map(records.map((record) => [record._id, record]));
      fill(results,
        h("p", { id: "duplicate-count" }, groups.length ? `${plural(groups.length, "group")} of near-duplicates` : "No near-duplicates found."),
        h("div", { class: "groups" }, shown.map((group, i) => {
          const box = groupBox(`Group ${i + 1}`, group.map((id) => byId.get(id) ?? { _id: id }), view);
          box.classList.add("duplicate-group");
          return box;
        })),
        groups.length > shown.length ? h("p", { class: "muted" }, `and ${groups.length - shown.length} more groups`) : null);
    } catch (failure) {
      fill(results);
      error.show(failure);
    } finally {
      button.disabled = false;
    }
  });
  return h("div", { class: "panel" },
    h("h2", {}, "Near-duplicate groups"),
    h("p", { class: "muted" },
      "Records so alike that they are likely copies of one image (resized, re-encoded, cropped…). ",
      view.info.type === "matching"
        ? "This collection's type has a calibrated threshold: leave the box empty to use it."
        : "This type may have no calibrated threshold: give one (a distance; try the distances shown by a search)."),
    form, error.node, results);
}

// -- about -----------------------------------------------------------------------------------

function aboutPanel(view) {
  const info = view.info;
  const error = errorSlot("drop-error");
  const facts = [
    ["Type", `${info.type} ${info.type_version}`],
    ["Records", formatCount(info.count)],
    ["Search by", describeKinds(info.query_kinds)],
    ["Fields indexed", info.fields_to_index.join(", ") || "none"],
    ["Product id field", info.product_id_field ?? "none"],
    ["Keeps images", info.store_images ? "yes" : "no"],
    ["Vectors", `${info.ndim} dimensions, ${info.metric}, ${info.precision}`],
    ["Memory", formatBytes(info.memory_bytes)],
  ];
  const drop = view.admin
    ? h("button", {
        type: "button", class: "danger", id: "drop-collection",
        onclick: async () => {
          if (!window.confirm(`Delete the collection “${info.name}” and all its records? This cannot be undone.`)) return;
          try {
            await api("DELETE", path("collections", info.name));
            window.location.hash = "#/";
          } catch (failure) {
            error.show(failure);
          }
        },
      }, "Delete collection")
    : null;
  return h("div", { class: "panel" },
    h("h2", {}, "Settings"),
    h("dl", { class: "facts wide" }, facts.map(([key, value]) => [h("dt", {}, key), h("dd", {}, value)])),
    h("h3", {}, "Type settings"),
    h("pre", { class: "mono" }, JSON.stringify(info.config, null, 2)),
    h("h3", {}, "Index"),
    h("pre", { class: "mono" }, JSON.stringify(info.index, null, 2)),
    drop ? h("div", { class: "actions" }, drop) : null,
    error.node,
  );
}
