// The dashboard: polls the service's figures every second (/stats, /movies,
// /viewers and /timeseries), keeps the last five minutes of the ingest rate
// for its chart, and looks up a user or a movie: a movie's totals, its stats
// and retention curve (/movies/{slug}/stats and /retention) and its watch time
// over time (/movies/{slug}/timeseries). Every analytics answer says which
// event it is as of; the page says so too.
'use strict';

const HISTORY_SECONDS = 300;
const POLL_MS = 1000;
const RETENTION_POINTS = 200;
const $ = (id) => document.getElementById(id);

/** Seconds as h:mm:ss. */
function hms(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  return `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}`;
}

/** A moment of a movie: m:ss, or h:mm:ss for a movie of an hour or more. */
const clock = (seconds, long) => (long ? hms(seconds) : hms(seconds).replace(/^0:0?/, ''));

const number = (n) => n.toLocaleString('en');
const percent = (share) => `${(share * 100).toFixed(1)} %`;

/** A whole number of seconds as an axis reads it: 30 s, 5 min, 2 h, 1,000 h. */
function span(seconds) {
  if (seconds === 0) return '0';
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${seconds / 60} min`;
  return `${number(seconds / 3600)} h`;
}

/** Axis steps in seconds, so that the ticks fall on whole seconds, minutes or hours. */
const SECOND_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800];
for (const hours of [1, 2, 3, 6, 12, 24, 48]) SECOND_STEPS.push(hours * 3600);
for (let power = 2; power <= 9; power++) for (const m of [1, 2, 5]) SECOND_STEPS.push(m * 10 ** power * 3600);

/** A bucket's start, in this browser's time zone. */
const bucketTime = (seconds) =>
  new Date(seconds * 1000).toLocaleString('en', { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false });

/** How far an analytics answer has got: the last event it includes, and how many it has still to count. */
function asOfNote({ asOf, lagEvents }) {
  const at = `as of event ${number(asOf)}`;
  return lagEvents > 0 ? `${at}; ${number(lagEvents)} newer not counted yet` : at;
}

/** An element with attributes and children (text or elements). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function row(...texts) {
  const tr = document.createElement('tr');
  for (const text of texts) tr.append(cell(text));
  return tr;
}

/** A JSON answer; a refusal throws its problem's detail, with its status. */
async function fetchJson(path) {
  const res = await fetch(path, { headers: { accept: 'application/json' } });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (!res.ok) throw Object.assign(new Error(body?.detail || `${res.status} ${res.statusText}`), { status: res.status });
  if (body === undefined) throw new Error(`${path} did not answer JSON`);
  return body;
}

/** A uPlot chart as wide as its container, resized with it; destroy() ends both. */
function plot(container, height, options, data) {
  const chart = new uPlot({ width: container.clientWidth || 300, height, ...options }, data, container);
  const observer = new ResizeObserver(() => {
    if (container.clientWidth > 0) chart.setSize({ width: container.clientWidth, height });
  });
  observer.observe(container);
  return { chart, destroy: () => (observer.disconnect(), chart.destroy()) };
}

// --- The ingest rate, from /stats ---------------------------------------------

const times = [];
const rates = [];
let last;
const rateChart = plot(
  $('chart'),
  200,
  {
    series: [{}, { label: 'events/s', stroke: '#2f6fdf', fill: '#2f6fdf22', width: 2 }],
    axes: [{}, { size: 60 }],
    legend: { show: false },
  },
  [times, rates],
).chart;

/** The server's clock less this browser's, from /stats: the minute view asks for the server's last hour. */
let clockOffset = 0;
const serverNow = () => Date.now() + clockOffset;

// --- Watch time over time: /timeseries, of the service or of a movie -----------

const INTERVALS = {
  hour: { choice: 'by hour, 48 h', words: 'by hour', range: 'in the last 48 hours', query: () => 'interval=hour' },
  minute: {
    choice: 'by minute, last hour',
    words: 'by minute',
    range: 'in the last hour',
    query: () => `interval=minute&from=${encodeURIComponent(new Date(serverNow() - 59 * 60_000).toISOString())}`,
  },
};

/** Radio buttons for the buckets of a watch time chart. */
function intervalChoice(name, legend) {
  const radios = Object.keys(INTERVALS).map((value, i) => el('input', { type: 'radio', name, value, ...(i === 0 ? { checked: '' } : {}) }));
  const fieldset = el('fieldset', { class: 'interval' }, el('legend', { class: 'sr-only' }, legend), ...radios.map((r) => el('label', {}, r, ` ${INTERVALS[r.value].choice}`)));
  return { fieldset, radios };
}

/** Bars of watch time by bucket, drawn over the answer's whole range, empty buckets included. */
function seriesChart(container, color) {
  let range = [0, 1];
  const handle = plot(
    container,
    180,
    {
      scales: { x: { time: true, range: () => range }, y: { range: (_u, _min, max) => [0, Math.max(60, (max ?? 0) * 1.15)] } },
      series: [
        { label: 'from', value: (_u, t) => (t == null ? '–' : bucketTime(t)) },
        {
          label: 'watched',
          stroke: color,
          fill: color,
          width: 0,
          paths: uPlot.paths.bars({ size: [0.85, 48], align: 1 }),
          points: { show: false },
          value: (_u, v) => (v == null ? '–' : hms(v)),
        },
      ],
      axes: [{ space: 70 }, { size: 64, incrs: SECOND_STEPS, values: (_u, ticks) => ticks.map(span) }],
    },
    [[], []],
  );
  return {
    destroy: handle.destroy,
    show(answer) {
      range = [Date.parse(answer.from) / 1000, Date.parse(answer.to) / 1000];
      handle.chart.setData([answer.buckets.map((b) => Date.parse(b.start) / 1000), answer.buckets.map((b) => b.watchTime)]);
    },
  };
}

/** A watch time chart with its buckets' choice, its total and its as-of note; refresh() asks again. */
function seriesView({ container, radios, total, asOf, path, what, color }) {
  const chart = seriesChart(container, color);
  let asked = 0;
  let ended = false;
  async function refresh() {
    const ask = ++asked;
    const kind = radios.find((r) => r.checked)?.value ?? 'hour';
    const words = INTERVALS[kind];
    try {
      const answer = await fetchJson(`${path}?${words.query()}`);
      if (ask !== asked || ended) return;
      chart.show(answer);
      const watched = answer.buckets.reduce((sum, b) => sum + b.watchTime, 0);
      const peak = answer.buckets.reduce((best, b) => (b.watchTime > best.watchTime ? b : best), answer.buckets[0]);
      total.className = 'total';
      total.textContent = `${hms(watched)} watched ${words.range}`;
      asOf.textContent = asOfNote(answer);
      const most = watched > 0 ? `; most in the ${kind} from ${bucketTime(Date.parse(peak.start) / 1000)}: ${hms(peak.watchTime)}` : '';
      container.setAttribute('aria-label', `Chart of ${what}'s watch time ${words.words}: ${hms(watched)} ${words.range}${most}`);
    } catch (error) {
      if (ask !== asked || ended) return;
      total.className = 'error';
      total.textContent = error.message;
      asOf.textContent = '';
    }
  }
  for (const r of radios) r.addEventListener('change', refresh);
  return { refresh, destroy: () => ((ended = true), chart.destroy()) };
}

const service = seriesView({
  container: $('series'),
  radios: [...document.querySelectorAll('input[name=series-interval]')],
  total: $('series-total'),
  asOf: $('series-asof'),
  path: '/timeseries',
  what: 'the service',
  color: '#2f6fdf',
});

// --- The front page's figures, every second ------------------------------------

async function topMovies() {
  const top = await fetchJson('/movies?limit=10');
  $('top').tBodies[0].replaceChildren(...top.items.map((m, i) => row(i + 1, m.slug, hms(m.watchTime), number(m.viewers))));
}

async function viewersNow() {
  try {
    const now = await fetchJson('/viewers');
    $('viewers-now').textContent = number(now.viewers);
    $('viewers-window').textContent = `users with an event in the last ${span(now.windowSeconds)}`;
    const rows = now.movies.map((m, i) => row(i + 1, m.slug, number(m.viewers)));
    if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 3, class: 'muted' }, `nobody in the last ${span(now.windowSeconds)}`)));
    $('now').tBodies[0].replaceChildren(...rows);
    $('now-asof').className = 'asof';
    $('now-asof').textContent = asOfNote(now);
  } catch (error) {
    $('now-asof').className = 'error';
    $('now-asof').textContent = error.message;
  }
}

async function poll() {
  try {
    const stats = await fetchJson('/stats');
    const now = Date.parse(stats.time) / 1000;
    clockOffset = now * 1000 - Date.now();
    if (last) {
      const rate = Math.max(0, Math.round((stats.eventsStored - last.stored) / Math.max(0.001, now - last.time)));
      times.push(now);
      rates.push(rate);
      while (times.length > 0 && times[0] < now - HISTORY_SECONDS) {
        times.shift();
        rates.shift();
      }
      rateChart.setData([times, rates]);
      $('rate').textContent = number(rate);
    }
    last = { stored: stats.eventsStored, time: now };
    $('stored').textContent = number(stats.eventsStored);
    $('queue').textContent = number(stats.queue.depth);
    $('capacity').textContent = `of ${number(stats.queue.capacity)}`;
    const rule = stats.accounting;
    $('rule').textContent = rule ? `accounting: ${rule.accounting}${rule.accounting === 'progress' ? `, steps up to ${rule.maxStep} s` : ''}` : '';
    await Promise.all([topMovies(), viewersNow(), service.refresh()]);
  } catch (error) {
    $('rule').textContent = `cannot reach the server: ${error.message}`;
  }
}

// --- Look-ups -------------------------------------------------------------------

/** The charts of the result shown, ended when another replaces it. */
let shown = [];
let lookups = 0;

function showResult(out, ...nodes) {
  for (const chart of shown) chart.destroy();
  shown = [];
  out.replaceChildren(...nodes);
}

function figure(key, label, value, note) {
  return el('div', {}, el('dt', {}, label), el('dd', { 'data-stat': key }, value), el('dd', { class: 'muted' }, note));
}

function statsFigures(s) {
  return el(
    'dl',
    { id: 'movie-stats', class: 'figures' },
    el(
      'div',
      {},
      el('dt', {}, 'duration'),
      el('dd', { 'data-stat': 'duration' }, hms(s.duration)),
      el('dd', { class: 'muted', 'data-stat': 'durationSource' }, s.durationSource === 'set' ? 'set for the movie' : 'observed: its furthest moment'),
    ),
    figure('watchTime', 'watched', hms(s.watchTime), 'all viewers together'),
    figure('viewers', 'viewers', number(s.viewers), 'covered a second or more'),
    figure('coverage', 'covered', hms(s.coverage), 'distinct seconds, summed'),
    figure('rewatched', 'rewatched', hms(s.rewatched), 'seconds watched again'),
    figure('completed', 'completed', number(s.completed), 'covered 90 % or more'),
    figure('completionRate', 'completion rate', percent(s.completionRate), 'completed / viewers'),
    figure('averageCoverage', 'average coverage', hms(Math.round(s.averageCoverage)), 'per viewer'),
  );
}

/** The share of viewers by second; points that fall on the same second (a short movie) drawn once. */
function retentionChart(container, curve) {
  const long = curve.duration >= 3600;
  const points = curve.points.filter((p, i, all) => i === 0 || p.second !== all[i - 1].second);
  return plot(
    container,
    200,
    {
      scales: { x: { time: false, range: () => [0, Math.max(1, curve.duration)] }, y: { range: () => [0, 1] } },
      series: [
        { label: 'at', value: (_u, v) => (v == null ? '–' : clock(v, long)) },
        {
          label: 'still watching',
          stroke: '#7a3fbf',
          fill: '#7a3fbf33',
          width: 2,
          points: { show: false },
          paths: uPlot.paths.stepped({ align: 1 }),
          value: (_u, v) => (v == null ? '–' : percent(v)),
        },
      ],
      axes: [
        { space: 70, incrs: SECOND_STEPS, values: (_u, ticks) => ticks.map((t) => clock(t, long)) },
        { size: 56, values: (_u, ticks) => ticks.map((t) => `${Math.round(t * 100)} %`) },
      ],
    },
    [points.map((p) => p.second), points.map((p) => p.share)],
  );
}

/** What the curve says in words: the share still watching at a quarter, half and three quarters of the movie. */
function retentionWords(curve) {
  if (curve.viewers === 0) return 'No viewer has covered a second of it yet.';
  const at = (fraction) => curve.points[Math.min(curve.points.length - 1, Math.floor(fraction * curve.points.length))];
  const quarters = [0.25, 0.5, 0.75].map((q) => `${percent(at(q).share)} at ${hms(at(q).second)}`);
  return `Of its ${number(curve.viewers)} viewers, still watching: ${quarters.join(', ')} (a quarter, half and three quarters of ${hms(curve.duration)}).`;
}

async function showMovie(name, out, current) {
  const path = `/movies/${encodeURIComponent(name)}`;
  const [totals, stats, retention] = await Promise.allSettled([
    fetchJson(`${path}/watch-time`),
    fetchJson(`${path}/stats`),
    fetchJson(`${path}/retention?points=${RETENTION_POINTS}`),
  ]);
  if (totals.status === 'rejected') throw totals.reason;
  if (!current()) return;
  const m = totals.value;
  const table = document.createElement('table');
  table.append(row('movie', m.slug), row('watched', hms(m.watchTime)), row('viewers', number(m.viewers)), row('events', number(m.events)));

  const coverage = el('section', { 'aria-labelledby': 'coverage-title' }, el('h3', { id: 'coverage-title' }, 'Coverage and retention'));
  const refused = [stats, retention].find((a) => a.status === 'rejected');
  let retentionBox;
  if (refused) {
    // 409 under sum accounting: the server's own words, in place of the figures and the curve.
    const error = refused.reason;
    coverage.append(el('p', { id: 'coverage-notice', class: error.status === 409 ? 'notice' : 'error' }, error.message));
  } else {
    const curve = retention.value;
    // The stats and the curve are two answers: the note is the older one's.
    const older = curve.asOf < stats.value.asOf ? curve : stats.value;
    retentionBox = el('div', {
      id: 'retention',
      class: 'chart',
      role: 'img',
      'aria-label': `Retention curve of ${m.slug}: the share of its viewers still watching, by second. ${retentionWords(curve)}`,
    });
    coverage.append(
      statsFigures(stats.value),
      el('h4', {}, 'Share of viewers by second'),
      retentionBox,
      el('p', { class: 'summary' }, el('span', { id: 'retention-words' }, retentionWords(curve)), ' ', el('span', { id: 'coverage-asof', class: 'asof' }, asOfNote(older))),
    );
  }

  const choice = intervalChoice('movie-interval', 'Buckets of the movie\'s watch time chart');
  const seriesBox = el('div', { id: 'movie-series', class: 'chart', role: 'img', 'aria-label': `Chart of ${m.slug}'s watch time: loading` });
  const total = el('span', { id: 'movie-series-total' });
  const asOf = el('span', { id: 'movie-series-asof', class: 'asof' });
  const over = el(
    'section',
    { 'aria-labelledby': 'movie-series-title' },
    el('div', { class: 'panel-head' }, el('h3', { id: 'movie-series-title' }, 'Watch time'), choice.fieldset),
    seriesBox,
    el('p', { class: 'summary' }, total, ' ', asOf),
  );

  showResult(out, table, coverage, over);
  if (retentionBox) shown.push(retentionChart(retentionBox, retention.value));
  const view = seriesView({ container: seriesBox, radios: choice.radios, total, asOf, path: `${path}/timeseries`, what: m.slug, color: '#0f7b7d' });
  shown.push(view);
  await view.refresh();
}

async function showUser(name, out, current) {
  const path = encodeURIComponent(name);
  const [u, page] = await Promise.all([fetchJson(`/users/${path}/watch-time`), fetchJson(`/users/${path}/movies?limit=50`)]);
  if (!current()) return;
  const summary = document.createElement('p');
  summary.textContent = `${u.user}: ${hms(u.watchTime)} watched over ${number(u.movies)} movie(s)`;
  const table = document.createElement('table');
  const head = row('movie', 'latest moment', 'watched');
  head.querySelectorAll('td').forEach((td) => (td.outerHTML = `<th>${td.textContent}</th>`));
  table.append(head, ...page.items.map((m) => row(m.slug, hms(m.latestMoment), hms(m.watchTime))));
  showResult(out, summary, table);
}

$('search').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = $('name').value.trim();
  const out = $('result');
  const ask = ++lookups;
  const current = () => ask === lookups;
  try {
    await ($('kind').value === 'movie' ? showMovie : showUser)(name, out, current);
  } catch (error) {
    if (!current()) return;
    const p = document.createElement('p');
    p.className = 'error';
    p.textContent = error.message;
    showResult(out, p);
  }
});

(async function loop() {
  await poll();
  setTimeout(loop, POLL_MS);
})();
