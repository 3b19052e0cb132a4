// Today's calls per hour, stacked by outcome: an inline SVG built with DOM calls (no library,
// nothing inline for the CSP to refuse), a legend, and the same numbers as a hidden table for
// screen readers. Colours come from supervisor.css, keyed by each bar's data-outcome.
import { OUTCOME_LABELS } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
// Bottom to top: what went well first, then what the floor should look at.
export const CHART_OUTCOMES = ["answered", "voicemail", "missed", "abandoned", "declined"];
// The drawing's own units; it scales to its panel's width, text with it.
const WIDTH = 560;
const HEIGHT = 240;
const MARGIN = { top: 10, right: 6, bottom: 26, left: 30 };
let charts = 0;

function svg(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

function html(name, attributes = {}, text = null) {
  const element = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

const hourLabel = (hour) => `${String(hour).padStart(2, "0")}:00`;
const total = (hour) => CHART_OUTCOMES.reduce((sum, outcome) => sum + (hour[outcome] || 0), 0);

/** Gridline steps of 1, 2, 5, 10, 20, 50 … so that about four lines cover the busiest hour. */
function axisStep(highest) {
  const rough = Math.max(1, highest / 4);
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= rough);
}

/** In words, for the image's label: how many calls, and the busiest hour. */
export function describeHours(hours) {
  const calls = hours.reduce((sum, hour) => sum + total(hour), 0);
  if (!calls) return "Calls per hour today: no calls yet.";
  const busiest = hours.reduce((best, hour) => (total(hour) > total(best) ? hour : best));
  return (
    `Calls per hour today: ${calls} call${calls === 1 ? "" : "s"}; the busiest hour, ` +
    `${hourLabel(busiest.hour)}, had ${total(busiest)}.`
  );
}

function bars(hours, plot) {
  const highest = Math.max(1, ...hours.map(total));
  const step = axisStep(highest);
  const top = Math.ceil(highest / step) * step;
  const y = (value) => plot.bottom - (value / top) * (plot.bottom - plot.top);
  const band = (plot.right - plot.left) / hours.length;
  const group = svg("g", { class: "plot" });
  for (let value = 0; value <= top; value += step) {
    group.append(
      svg("line", { class: "grid", x1: plot.left, x2: plot.right, y1: y(value), y2: y(value) }),
      svg("text", { class: "axis", x: plot.left - 6, y: y(value) + 4, "text-anchor": "end" }, value),
    );
  }
  hours.forEach((hour, index) => {
    const x = plot.left + index * band;
    if (hour.hour % 3 === 0) {
      const at = { class: "axis", x: x + band / 2, y: plot.bottom + 17, "text-anchor": "middle" };
      group.append(svg("text", at, hourLabel(hour.hour)));
    }
    let stacked = 0;
    for (const outcome of CHART_OUTCOMES) {
      const count = hour[outcome] || 0;
      if (!count) continue;
      const rect = svg("rect", {
        class: "bar",
        x: x + band * 0.15,
        width: band * 0.7,
        y: y(stacked + count),
        height: y(stacked) - y(stacked + count),
        "data-hour": hour.hour,
        "data-outcome": outcome,
        "data-count": count,
      });
      rect.append(svg("title", {}, `${hourLabel(hour.hour)}: ${count} ${OUTCOME_LABELS[outcome].toLowerCase()}`));
      group.append(rect);
      stacked += count;
    }
  });
  return group;
}

function legend() {
  const list = html("ul", { class: "chart-legend" });
  for (const outcome of CHART_OUTCOMES) {
    const item = html("li");
    item.append(html("span", { class: "swatch", "data-outcome": outcome, "aria-hidden": "true" }));
    item.append(OUTCOME_LABELS[outcome]);
    list.append(item);
  }
  return list;
}

/** The numbers the bars show, hour by hour (only hours with calls), for assistive technology. */
function table(hours) {
  const busy = hours.filter((hour) => total(hour) > 0);
  const element = html("table");
  element.append(html("caption", {}, "Calls per hour today, by outcome"));
  const head = html("tr");
  head.append(html("th", { scope: "col" }, "Hour"));
  for (const outcome of CHART_OUTCOMES) head.append(html("th", { scope: "col" }, OUTCOME_LABELS[outcome]));
  element.append(html("thead"));
  element.tHead.append(head);
  const body = html("tbody");
  for (const hour of busy) {
    const row = html("tr");
    row.append(html("th", { scope: "row" }, hourLabel(hour.hour)));
    for (const outcome of CHART_OUTCOMES) row.append(html("td", {}, hour[outcome] || 0));
    body.append(row);
  }
  element.append(body);
  // Hidden by a wrapper: a table grows to fit its cells whatever width it is given.
  const wrapper = html("div", { class: "visually-hidden" });
  wrapper.append(element);
  return wrapper;
}

/** Draw (or redraw) the chart of `hours` (the summary's 24 rows) into `container`. */
export function drawHourChart(container, hours) {
  if (!container.dataset.chartId) container.dataset.chartId = String(++charts);
  const titleId = `hour-chart-title-${container.dataset.chartId}`;
  const image = svg("svg", {
    role: "img",
    "aria-labelledby": titleId,
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: "xMidYMid meet",
    class: "chart",
  });
  image.append(svg("title", { id: titleId }, describeHours(hours)));
  const plot = {
    left: MARGIN.left,
    right: WIDTH - MARGIN.right,
    top: MARGIN.top,
    bottom: HEIGHT - MARGIN.bottom,
  };
  image.append(bars(hours, plot));
  container.replaceChildren(image, legend(), table(hours));
}
