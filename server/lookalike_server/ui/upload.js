// The "Add records" tab: a JSON-lines file inserted through insert jobs (a progress bar and
// the records that were skipped, with the reason), or image files uploaded as they are.

import { api, path } from "./api.js";
import { errorSlot, fill, formatCount, h, plural } from "./dom.js";

/** Records per insert job: the server takes up to 100 000, but smaller jobs keep bodies small. */
const JOB_RECORDS = 10_000;
/** JSON characters per insert job (the server's body limit is 64 MiB by default). */
const JOB_CHARACTERS = 16_000_000;
/** Image files per upload request (the server takes up to 1000). */
const FILES_PER_REQUEST = 32;
/** Skipped records listed at most. */
const ROWS_SHOWN = 500;
const POLL_MS = 300;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The lines of a JSON-lines text as records, and the lines that are not records. */
export function parseJsonLines(text) {
  const records = [];
  const problems = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (!line) return;
    let value;
    try {
      value = JSON.parse(line);
    } catch (failure) {
      problems.push({ line: index + 1, id: null, code: "invalid_json", message: `not JSON: ${failure.message}` });
      return;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      problems.push({ line: index + 1, id: null, code: "invalid_record", message: "a record is a JSON object: {\"_id\": ..., \"_url\": ...}" });
      return;
    }
    records.push({ record: value, line: index + 1, size: line.length });
  });
  return { records, problems };
}

/** Consecutive slices of records, each within the job limits. */
function batches(records) {
  const out = [];
  let current = [];
  let characters = 0;
  for (const item of records) {
    if (current.length && (current.length >= JOB_RECORDS || characters + item.size > JOB_CHARACTERS)) {
      out.push(current);
      current = [];
      characters = 0;
    }
    current.push(item);
    characters += item.size;
  }
  if (current.length) out.push(current);
  return out;
}

function problemTable(id, rows, { lineLabel = "Line", truncated = false } = {}) {
  if (!rows.length) return h("div", { id });
  const shown = rows.slice(0, ROWS_SHOWN);
  return h("div", { id, class: "problems" },
    h("h3", {}, `${plural(rows.length, "record")} skipped`),
    h("div", { class: "table-scroll" },
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, lineLabel), h("th", {}, "_id"), h("th", {}, "Problem"))),
        h("tbody", {}, shown.map((row) => h("tr", { dataset: { line: String(row.line) } },
          h("td", { class: "num" }, String(row.line)),
          h("td", { class: "mono" }, row.id ?? "—"),
          h("td", {}, row.message, " ", h("span", { class: "code" }, row.code))))))),
    rows.length > shown.length ? h("p", { class: "muted" }, `and ${formatCount(rows.length - shown.length)} more`) : null,
    truncated ? h("p", { class: "muted" }, "The server lists the first 1000 skipped records of each job.") : null,
  );
}

function example(info) {
  const record = { _id: "shoe-1", _url: "https://example.com/images/shoe-1.jpg" };
  for (const field of info.fields_to_index.slice(0, 3)) record[field] = field === "price" ? 49.9 : "…";
  if (info.product_id_field) record[info.product_id_field] = "p-100";
  if (!info.fields_to_index.length && !info.product_id_field) record.category = "shoes";
  return JSON.stringify(record, null, 1).replace(/\n\s*/g, " ");
}

export class UploadPanel {
  constructor(view) {
    this.view = view;
    this.alive = true;
    this.node = h("div", { class: "upload-layout" }, this.jsonLinesPanel(), this.view.info.query_kinds.includes("image") ? this.imagesPanel() : null);
  }

  destroy() {
    this.alive = false;
  }

  jsonLinesPanel() {
    this.linesError = errorSlot("jsonl-error");
    const input = h("input", { type: "file", id: "jsonl-file", accept: ".jsonl,.ndjson,.json,.txt,application/x-ndjson,application/json,text/plain", class: "visually-hidden" });
    const drop = h("label", { class: "drop", for: "jsonl-file", id: "jsonl-drop" },
      h("strong", {}, "Drop a .jsonl file here"), h("span", {}, "or choose one"));
    input.addEventListener("change", () => {
      if (input.files?.length) this.insertFile(input.files[0]);
      input.value = "";
    });
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = event.dataTransfer?.files?.[0];
      if (file) this.insertFile(file);
    });
    this.progress = h("progress", { id: "job-progress", max: 1, value: 0 });
    this.status = h("p", { id: "job-status", class: "status" });
    this.job = h("div", { id: "job", class: "job", hidden: true }, this.progress, this.status);
    this.problems = h("div", { id: "job-errors" });
    return h("section", { class: "panel" },
      h("h2", {}, "Add records from a JSON-lines file"),
      h("p", { class: "muted" },
        "One record per line: an ", h("code", {}, "_id"), " and an image as ", h("code", {}, "_url"),
        " (or ", h("code", {}, "_base64"), "), plus any metadata to filter on. A record with an existing ",
        h("code", {}, "_id"), " replaces it."),
      h("pre", { class: "mono example" }, example(this.view.info)),
      input, drop, this.linesError.node, this.job, this.problems);
  }

  async insertFile(file) {
    this.linesError.clear();
    fill(this.problems);
    let text;
    try {
      text = await file.text();
    } catch (failure) {
      this.linesError.show({ code: "unreadable", message: `Could not read ${file.name}: ${failure.message}` });
      return;
    }
    const { records, problems } = parseJsonLines(text);
    if (!records.length) {
      this.linesError.show({ code: "no_records", message: `${file.name} has no records: each line should be a JSON object.` });
      this.problems.replaceWith((this.problems = problemTable("job-errors", problems)));
      return;
    }
    const total = records.length;
    let processed = 0;
    let inserted = 0;
    let truncated = false;
    const skipped = [...problems];
    this.job.hidden = false;
    this.job.dataset.status = "running";
    this.progress.max = total;
    this.progress.value = 0;
    const show = (current, message) => {
      this.progress.value = processed + (current?.processed ?? 0);
      const done = inserted + (current?.inserted ?? 0);
      const failed = skipped.length + (current?.failed ?? 0);
      fill(this.status,
        h("strong", {}, message), " ",
        `${formatCount(this.progress.value)} of ${plural(total, "record")} · ${formatCount(done)} inserted`,
        failed ? ` · ${formatCount(failed)} skipped` : "");
    };
    show(null, `Inserting ${file.name}…`);
    for (const batch of batches(records)) {
      let job;
      try {
        job = await api("POST", path("collections", this.view.name, "jobs"), { json: { records: batch.map((item) => item.record) } });
        while (this.alive && (job.status === "queued" || job.status === "running")) {
          show(job, job.status === "queued" ? "Waiting for the server…" : `Inserting ${file.name}…`);
          await sleep(POLL_MS);
          job = await api("GET", path("jobs", job.id));
        }
      } catch (failure) {
        this.job.dataset.status = "failed";
        this.linesError.show(failure);
        break;
      }
      if (!this.alive) return;
      processed += job.processed;
      inserted += job.inserted;
      truncated ||= job.errors_truncated;
      for (const error of job.errors) {
        skipped.push({ line: batch[error.position]?.line ?? "?", id: error._id, code: error.code, message: error.message.replace(/^record \d+: /, "") });
      }
      if (job.status === "failed") {
        this.job.dataset.status = "failed";
        this.linesError.show({ code: "job_failed", message: job.message ?? "The insert job failed." });
        break;
      }
    }
    if (this.job.dataset.status === "running") this.job.dataset.status = "done";
    skipped.sort((a, b) => a.line - b.line);
    show(null, this.job.dataset.status === "done" ? "Done." : "Stopped.");
    this.progress.value = this.job.dataset.status === "done" ? total : processed;
    this.problems.replaceWith((this.problems = problemTable("job-errors", skipped, { truncated })));
    await this.view.refresh();
    this.view.search.rerun();
  }

  imagesPanel() {
    this.imagesError = errorSlot("images-error");
    const files = h("input", { type: "file", id: "image-files", multiple: true, accept: "image/*" });
    const meta = h("textarea", { id: "image-metadata", rows: 2, class: "mono", spellcheck: "false", placeholder: '{"category": "shoes"}' });
    const button = h("button", { type: "submit", id: "add-images" }, "Add images");
    this.imageStatus = h("p", { id: "image-status", class: "status" });
    this.imageProblems = h("div", { id: "image-errors" });
    const form = h("form", { class: "stack" },
      h("div", { class: "field" }, h("label", { for: "image-files" }, "Image files"), files,
        h("p", { class: "hint" }, "Each file becomes a record whose _id is the file name.")),
      h("div", { class: "field" }, h("label", { for: "image-metadata" }, "Metadata for every image (JSON, optional)"), meta),
      this.imagesError.node,
      h("div", { class: "actions" }, button),
      this.imageStatus, this.imageProblems);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      this.imagesError.clear();
      const chosen = [...(files.files ?? [])];
      if (!chosen.length) {
        this.imagesError.show({ code: "no_files", message: "Choose one or more image files first." });
        return;
      }
      if (meta.value.trim()) {
        try {
          const value = JSON.parse(meta.value);
          if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("it must be a JSON object");
        } catch (failure) {
          this.imagesError.show({ code: "invalid_json", message: `The metadata is not a JSON object: ${failure.message}` });
          return;
        }
      }
      button.disabled = true;
      let inserted = 0;
      const skipped = [];
      try {
        for (let start = 0; start < chosen.length; start += FILES_PER_REQUEST) {
          const part = chosen.slice(start, start + FILES_PER_REQUEST);
          fill(this.imageStatus, `Adding ${formatCount(start + 1)}–${formatCount(start + part.length)} of ${plural(chosen.length, "image")}…`);
          const form = new FormData();
          for (const file of part) form.append("file", file, file.name);
          if (meta.value.trim()) form.append("metadata", meta.value.trim());
          const answer = await api("POST", path("collections", this.view.name, "records", "upload"), { form });
          inserted += answer.inserted.length;
          for (const error of answer.errors) {
            skipped.push({ line: start + error.position + 1, id: error._id, code: error.code, message: error.message.replace(/^record \d+: /, "") });
          }
        }
        fill(this.imageStatus, h("strong", {}, "Done."), ` ${plural(inserted, "image")} added.`);
      } catch (failure) {
        fill(this.imageStatus, `${plural(inserted, "image")} added before the error.`);
        this.imagesError.show(failure);
      } finally {
        button.disabled = false;
      }
      this.imageProblems.replaceWith((this.imageProblems = problemTable("image-errors", skipped, { lineLabel: "File" })));
      await this.view.refresh();
      this.view.search.rerun();
    });
    return h("section", { class: "panel" },
      h("h2", {}, "Add image files"),
      h("p", { class: "muted" }, "Images from this computer, without metadata of their own."),
      form);
  }
}
