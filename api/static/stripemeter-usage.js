/*
 * <stripemeter-usage>: one customer's usage, period and cost, read from StripeMeter
 * with a short-lived widget token. No dependency; served by StripeMeter at
 * /widget/stripemeter-usage.js. Documentation: docs/widget.md.
 *
 *   <script src="https://meter.example.com/widget/stripemeter-usage.js" defer></script>
 *   <stripemeter-usage token="smw_..." api-url="https://meter.example.com"></stripemeter-usage>
 *
 * It shows only what the service answered. On any error (expired token, network,
 * CORS refusal, 5xx, an answer of the wrong shape) it removes every number and
 * says what happened, with a retry button.
 */
(() => {
  "use strict";

  // Where this script was served from: the default api-url.
  const SCRIPT_ORIGIN = (() => {
    try {
      return document.currentScript ? new URL(document.currentScript.src).origin : "";
    } catch (_) {
      return "";
    }
  })();

  const STYLE = `
    :host {
      display: block;
      font-family: var(--stripemeter-font-family, system-ui, -apple-system, "Segoe UI", sans-serif);
      font-size: var(--stripemeter-font-size, 14px);
      color: var(--stripemeter-color-text, #1a1a1a);
    }
    [hidden] { display: none !important; }
    .card {
      background: var(--stripemeter-color-background, #ffffff);
      border: 1px solid var(--stripemeter-color-border, #c4c4c4);
      border-radius: var(--stripemeter-radius, 8px);
      padding: var(--stripemeter-padding, 16px);
    }
    h2 { font-size: 1.15em; margin: 0 0 0.25em; }
    .period { color: var(--stripemeter-color-muted, #545454); margin: 0 0 0.75em; }
    table { border-collapse: collapse; width: 100%; }
    caption { text-align: left; position: absolute; width: 1px; height: 1px; overflow: hidden;
      clip: rect(0 0 0 0); white-space: nowrap; }
    th, td { padding: 0.4em 0.5em; border-bottom: 1px solid var(--stripemeter-color-border, #c4c4c4); }
    thead th { text-align: left; font-weight: 600; color: var(--stripemeter-color-muted, #545454); }
    td { text-align: right; font-variant-numeric: tabular-nums; }
    tbody th { text-align: left; font-weight: 500; }
    tfoot th, tfoot td { font-weight: 600; border-bottom: none; }
    tfoot th { text-align: left; }
    .none { color: var(--stripemeter-color-muted, #545454); font-style: italic; }
    .unit { color: var(--stripemeter-color-muted, #545454); }
    .note { color: var(--stripemeter-color-muted, #545454); margin: 0.75em 0 0; font-size: 0.9em; }
    .status { color: var(--stripemeter-color-muted, #545454); }
    .error {
      color: var(--stripemeter-color-error, #a40e26);
      background: var(--stripemeter-color-error-background, #fdecee);
      border: 1px solid currentColor;
      border-radius: var(--stripemeter-radius, 8px);
      padding: 0.75em;
    }
    .error strong { display: block; margin-bottom: 0.25em; }
    button {
      font: inherit;
      margin-top: 0.5em;
      padding: 0.35em 0.9em;
      color: var(--stripemeter-color-button-text, #ffffff);
      background: var(--stripemeter-color-accent, #0a55b8);
      border: none;
      border-radius: var(--stripemeter-radius, 8px);
      cursor: pointer;
    }
    button:focus-visible { outline: 3px solid var(--stripemeter-color-focus, #1a1a1a); outline-offset: 2px; }
  `;

  const DECIMAL = /^-?\d+(\.\d+)?$/;

  class WidgetError extends Error {
    constructor(title, detail, status) {
      super(detail);
      this.title = title;
      this.status = status;
    }
  }

  function isText(value) {
    return typeof value === "string";
  }

  function isMoney(value) {
    return (
      value === null ||
      (typeof value === "object" && Number.isInteger(value.amount) && isText(value.decimal) &&
        DECIMAL.test(value.decimal))
    );
  }

  /** The answer, checked field by field: anything else is refused, never half shown. */
  function checked(body) {
    const ok =
      body !== null &&
      typeof body === "object" &&
      isText(body.customerRef) &&
      isText(body.period) &&
      isText(body.periodStart) &&
      isText(body.periodEnd) &&
      isText(body.asOf) &&
      !Number.isNaN(Date.parse(body.periodStart)) &&
      !Number.isNaN(Date.parse(body.periodEnd)) &&
      Array.isArray(body.metrics) &&
      (body.currency === null || isText(body.currency)) &&
      isMoney(body.costSoFar) &&
      isMoney(body.forecast) &&
      (body.costReason === null || isText(body.costReason)) &&
      body.metrics.every(
        (m) =>
          m !== null &&
          typeof m === "object" &&
          isText(m.metric) &&
          isText(m.unit) &&
          isText(m.value) &&
          DECIMAL.test(m.value) &&
          (m.currency === null || isText(m.currency)) &&
          isMoney(m.costSoFar) &&
          isMoney(m.forecast) &&
          (m.noPrice === null || isText(m.noPrice)),
      );
    if (!ok) {
      throw new WidgetError(
        "Usage could not be shown",
        "The usage service sent an answer this widget does not understand.",
      );
    }
    return body;
  }

  function utc(iso, withTime) {
    const options = withTime
      ? { dateStyle: "medium", timeStyle: "short", hourCycle: "h23", timeZone: "UTC" }
      : { dateStyle: "medium", timeZone: "UTC" };
    return new Intl.DateTimeFormat(undefined, options).format(new Date(iso)) + (withTime ? " UTC" : "");
  }

  /** "in 16 days", measured from the answer's own asOf (the service's clock, not the browser's). */
  function remaining(endIso, asOfIso) {
    const ms = Date.parse(endIso) - Date.parse(asOfIso);
    if (Number.isNaN(ms)) return "";
    const hours = Math.floor(ms / 3_600_000);
    if (hours >= 48) return ` — in ${Math.floor(hours / 24)} days`;
    if (hours >= 1) return ` — in ${hours} hour${hours === 1 ? "" : "s"}`;
    return ms > 0 ? " — in less than an hour" : "";
  }

  function amount(money, currency) {
    return `${money.decimal} ${String(currency || "").toUpperCase()}`.trim();
  }

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    for (const child of children) node.append(child);
    return node;
  }

  class StripemeterUsage extends HTMLElement {
    static get observedAttributes() {
      return ["token", "api-url", "heading"];
    }

    #token = null;
    #generation = 0;
    #controller = null;

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      const style = document.createElement("style");
      style.textContent = STYLE;
      this.heading = el("h2", { id: "title", part: "heading" });
      this.body = el("div", { part: "body" });
      this.region = el(
        "section",
        { class: "card", role: "region", "aria-labelledby": "title", part: "card" },
        this.heading,
        this.body,
      );
      root.append(style, this.region);
    }

    /** The widget token; setting it (a fresh one, say) reloads. */
    get token() {
      return this.#token ?? this.getAttribute("token");
    }

    set token(value) {
      this.#token = value == null ? null : String(value);
      if (this.isConnected) this.refresh();
    }

    get apiUrl() {
      return (this.getAttribute("api-url") || SCRIPT_ORIGIN).replace(/\/+$/, "");
    }

    connectedCallback() {
      this.refresh();
    }

    disconnectedCallback() {
      this.#controller?.abort();
    }

    attributeChangedCallback(name, before, after) {
      if (name === "token") this.#token = null;
      if (before !== after && this.isConnected) this.refresh();
    }

    /** Read the usage again. Until the answer, nothing but "Loading" is shown. */
    async refresh() {
      const generation = ++this.#generation;
      this.#controller?.abort();
      const controller = new AbortController();
      this.#controller = controller;
      this.heading.textContent = this.getAttribute("heading") || "Your usage";
      this.#showLoading();
      let usage;
      try {
        usage = await this.#fetch(controller.signal);
      } catch (error) {
        if (generation !== this.#generation) return; // a newer refresh owns the widget
        this.#showError(error);
        return;
      }
      if (generation !== this.#generation) return;
      this.#showUsage(usage);
    }

    async #fetch(signal) {
      const token = this.token;
      if (!token) {
        throw new WidgetError("Usage could not be shown", "No widget token was given to this widget.");
      }
      let response;
      try {
        response = await fetch(`${this.apiUrl}/v1/widget/usage`, {
          headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
          credentials: "omit",
          cache: "no-store",
          signal,
        });
      } catch (_) {
        throw new WidgetError(
          "The usage service could not be reached",
          "A network error, or this page's address is not allowed to read usage.",
        );
      }
      if (!response.ok) {
        let detail = "";
        try {
          const problem = await response.json();
          if (problem && isText(problem.detail)) detail = problem.detail;
        } catch (_) {
          detail = "";
        }
        if (response.status === 401) {
          throw new WidgetError(
            "Your usage view has expired",
            detail || "The widget token is no longer valid.",
            401,
          );
        }
        const title =
          response.status >= 500
            ? "The usage service is unavailable"
            : "The usage service refused the request";
        throw new WidgetError(title, `HTTP ${response.status}${detail ? `: ${detail}` : ""}`, response.status);
      }
      let body;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      return checked(body);
    }

    #showLoading() {
      this.region.setAttribute("aria-busy", "true");
      this.body.replaceChildren(el("p", { class: "status", role: "status" }, "Loading usage…"));
    }

    #showError(error) {
      const title = error instanceof WidgetError ? error.title : "Usage could not be shown";
      const detail = error instanceof WidgetError ? error.message : "An unexpected error occurred.";
      const retry = el("button", { type: "button", part: "retry" }, "Try again");
      retry.addEventListener("click", () => this.refresh());
      const box = el(
        "div",
        { class: "error", role: "alert", part: "error", "data-state": "error" },
        el("strong", {}, `Error: ${title}`),
        el("span", { "data-field": "error-detail" }, detail),
        el("br"),
        retry,
      );
      this.region.removeAttribute("aria-busy");
      this.body.replaceChildren(box);
      this.dispatchEvent(
        new CustomEvent("stripemeter-usage-error", {
          detail: { status: error.status ?? null, message: detail },
          bubbles: true,
          composed: true,
        }),
      );
    }

    #showUsage(usage) {
      // The end is exclusive: the period's last day is the day before it.
      const lastDay = new Date(Date.parse(usage.periodEnd) - 1).toISOString();
      const period = el(
        "p",
        { class: "period", part: "period" },
        "Billing period ",
        el("time", { datetime: usage.periodStart, "data-field": "period-start" }, utc(usage.periodStart)),
        " – ",
        el("time", { datetime: lastDay }, utc(lastDay)),
        el("br"),
        "Ends ",
        el("time", { datetime: usage.periodEnd, "data-field": "period-end" }, utc(usage.periodEnd, true)),
        remaining(usage.periodEnd, usage.asOf),
      );
      const rows = usage.metrics.map((m) => {
        const cost = (money) =>
          money === null
            ? el("span", { class: "none", title: m.noPrice || "" }, "no price")
            : amount(money, m.currency);
        return el(
          "tr",
          { "data-metric": m.metric },
          el("th", { scope: "row" }, m.metric),
          el("td", { "data-field": "value" }, m.value, m.unit ? el("span", { class: "unit" }, ` ${m.unit}`) : ""),
          el("td", { "data-field": "cost" }, cost(m.costSoFar)),
          el("td", { "data-field": "forecast" }, cost(m.forecast)),
        );
      });
      const table = el(
        "table",
        { part: "table" },
        el("caption", {}, "Usage, cost so far and forecast per metric"),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { scope: "col" }, "Metric"),
            el("th", { scope: "col" }, "Usage"),
            el("th", { scope: "col" }, "Cost so far"),
            el("th", { scope: "col" }, "Forecast"),
          ),
        ),
        el("tbody", {}, ...rows),
      );
      if (usage.costSoFar !== null && usage.forecast !== null) {
        table.append(
          el(
            "tfoot",
            {},
            el(
              "tr",
              { "data-metric": "" },
              el(
                "th",
                { scope: "row" },
                usage.metrics.some((m) => m.costSoFar === null) ? "Total of priced metrics" : "Total",
              ),
              el("td", {}, ""),
              el("td", { "data-field": "total-cost" }, amount(usage.costSoFar, usage.currency)),
              el("td", { "data-field": "total-forecast" }, amount(usage.forecast, usage.currency)),
            ),
          ),
        );
      }
      const content = [period];
      // When these numbers were read, by the service's clock: never passed off as "now" later.
      const asOf = el(
        "p",
        { class: "note", part: "as-of" },
        "As of ",
        el("time", { datetime: usage.asOf, "data-field": "as-of" }, utc(usage.asOf, true)),
      );
      content.push(rows.length ? table : el("p", { class: "status" }, "No usage in this period yet."));
      if (usage.costReason) {
        content.push(el("p", { class: "note", "data-field": "cost-reason" }, `No total cost: ${usage.costReason}`));
      }
      content.push(asOf);
      this.region.removeAttribute("aria-busy");
      this.body.replaceChildren(...content);
      this.body.firstChild.setAttribute("data-state", "loaded");
      this.dispatchEvent(new CustomEvent("stripemeter-usage-loaded", { bubbles: true, composed: true }));
    }
  }

  if (!customElements.get("stripemeter-usage")) {
    customElements.define("stripemeter-usage", StripemeterUsage);
  }
})();
