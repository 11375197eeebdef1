// Numbers, times and changes as people read them. Times are in the browser's time zone.

const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compactFmt = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

export function count(n) {
  if (n === null || n === undefined) return "–";
  return Math.abs(n) >= 100000 ? compactFmt.format(n) : intFmt.format(n);
}

export function exactCount(n) {
  return n === null || n === undefined ? "–" : intFmt.format(n);
}

/** A ratio (0..1) as a percentage with sensible precision: 0.0312 -> "3.12%". */
export function percent(ratio) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "–";
  const p = ratio * 100;
  if (p === 0) return "0%";
  if (p < 0.01) return "<0.01%";
  const digits = p < 1 ? 2 : p < 10 ? 2 : 1;
  return `${p.toFixed(digits)}%`;
}

/** Milliseconds of latency: "183 ms", "12.5 ms", "1.83 s". */
export function ms(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 1 : 2)} s`;
  if (v >= 100) return `${Math.round(v)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

export function rate(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v >= 100) return `${intFmt.format(Math.round(v))} req/s`;
  if (v >= 1) return `${v.toFixed(1)} req/s`;
  return `${v.toFixed(3)} req/s`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** A duration in seconds, short: "8 s", "3 min", "2 h 5 min", "3 d". */
export function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return m % 60 ? `${hours} h ${m % 60} min` : `${hours} h`;
  return `${Math.floor(hours / 24)} d`;
}

const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const shortFmt = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

export function dateTime(tMs) {
  return tMs === null || tMs === undefined ? "–" : dateTimeFmt.format(new Date(tMs));
}

export function shortDateTime(tMs) {
  return shortFmt.format(new Date(tMs));
}

export function clock(tMs) {
  return timeFmt.format(new Date(tMs));
}

export function timeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

/**
 * How a value changed against a baseline (by default the previous period), as
 * {text, trend, label}: trend is "worse", "better" or "same" (for the colour; the text
 * says it too). kind: "relative" (percent change) or "points" (percentage points of a
 * ratio). baseline: what `before` is, in words ("the same period a day earlier").
 */
export function change(now, before, kind, higherIsWorse = true, baseline = "the previous period") {
  if (now === null || now === undefined) return null;
  if (before === null || before === undefined) return { text: "new", trend: "same", label: `no data in ${baseline}` };
  let delta;
  let text;
  if (kind === "points") {
    delta = (now - before) * 100;
    if (Math.abs(delta) < 0.005) return { text: "±0", trend: "same", label: `unchanged against ${baseline}` };
    text = `${delta > 0 ? "+" : "−"}${Math.abs(delta).toFixed(Math.abs(delta) < 1 ? 2 : 1)} pp`;
  } else {
    if (before === 0) {
      return now === 0
        ? { text: "±0", trend: "same", label: `unchanged against ${baseline}` }
        : { text: "new", trend: "same", label: `none in ${baseline}` };
    }
    delta = ((now - before) / before) * 100;
    if (Math.abs(delta) < 0.5) return { text: "±0%", trend: "same", label: `unchanged against ${baseline}` };
    text = `${delta > 0 ? "+" : "−"}${Math.abs(delta) >= 10 ? Math.round(Math.abs(delta)) : Math.abs(delta).toFixed(1)}%`;
  }
  const up = delta > 0;
  const trend = up === higherIsWorse ? "worse" : "better";
  return { text, trend, label: `${up ? "up" : "down"} ${text.replace(/^[+−]/, "")} against ${baseline}` };
}
