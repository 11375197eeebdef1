// Downloads of what a view shows: each chart section and table gets a CSV and a Parquet
// button that sends its own query to POST /api/v1/query?format=... (docs/query-api.md,
// "Exports") and saves the answer under the file name the API gives.

import * as api from "./api.js";
import { h } from "./dom.js";

const FORMATS = [["csv", "CSV"], ["parquet", "Parquet"]];
const KEEP_URL_MS = 60_000; // long enough for the browser to have taken the file

function save(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), KEEP_URL_MS);
}

function failure(error) {
  const id = error.requestId ? ` (request id ${error.requestId})` : "";
  return `Download failed: ${error.message}${id}.`;
}

/**
 * "<label> CSV Parquet" for `what` (e.g. "the chart data"); body() builds the query at
 * the time of the click, so a range like the last hour ends now.
 */
export function exportButtons(what, body, label = "Download") {
  const status = h("span", { class: "export-status", role: "status" });
  const buttons = FORMATS.map(([format, label]) => {
    const button = h(
      "button",
      { type: "button", class: "export-button", "data-format": format, "aria-label": `Download ${what} as ${label}` },
      label,
    );
    button.addEventListener("click", async () => {
      button.disabled = true;
      status.textContent = "";
      try {
        const { blob, filename } = await api.download(body(), format);
        save(blob, filename);
      } catch (error) {
        status.textContent = failure(error);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  });
  return h("div", { class: "export", role: "group", "aria-label": `Download ${what}` },
    h("span", { class: "export-label", "aria-hidden": "true" }, label), buttons, status);
}
