// The dashboard: polls /stats and /movies every second, keeps the last five
// minutes of the ingest rate for the chart, and looks up a user or a movie.
'use strict';

const HISTORY_SECONDS = 300;
const $ = (id) => document.getElementById(id);

/** Seconds as h:mm:ss. */
function hms(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  return `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}`;
}

const number = (n) => n.toLocaleString('en');

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

async function fetchJson(path) {
  const res = await fetch(path, { headers: { accept: 'application/json' } });
  const body = await res.json();
  if (!res.ok) throw new Error(body.detail || `${res.status}`);
  return body;
}

const times = [];
const rates = [];
let last;
const chart = new uPlot(
  {
    width: $('chart').clientWidth || 600,
    height: 200,
    series: [{}, { label: 'events/s', stroke: '#2f6fdf', fill: '#2f6fdf22', width: 2 }],
    axes: [{}, { size: 60 }],
    legend: { show: false },
  },
  [times, rates],
  $('chart'),
);
new ResizeObserver(() => chart.setSize({ width: $('chart').clientWidth, height: 200 })).observe($('chart'));

async function poll() {
  try {
    const stats = await fetchJson('/stats');
    const now = Date.parse(stats.time) / 1000;
    if (last) {
      const rate = Math.max(0, Math.round((stats.eventsStored - last.stored) / Math.max(0.001, now - last.time)));
      times.push(now);
      rates.push(rate);
      while (times.length > 0 && times[0] < now - HISTORY_SECONDS) {
        times.shift();
        rates.shift();
      }
      chart.setData([times, rates]);
      $('rate').textContent = number(rate);
    }
    last = { stored: stats.eventsStored, time: now };
    $('stored').textContent = number(stats.eventsStored);
    $('queue').textContent = number(stats.queue.depth);
    $('capacity').textContent = `of ${number(stats.queue.capacity)}`;
    const rule = stats.accounting;
    $('rule').textContent = rule ? `accounting: ${rule.accounting}${rule.accounting === 'progress' ? `, steps up to ${rule.maxStep} s` : ''}` : '';

    const top = await fetchJson('/movies?limit=10');
    $('top').tBodies[0].replaceChildren(...top.items.map((m, i) => row(i + 1, m.slug, hms(m.watchTime), number(m.viewers))));
  } catch (error) {
    $('rule').textContent = `cannot reach the server: ${error.message}`;
  }
}

$('search').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = $('name').value.trim();
  const out = $('result');
  const path = encodeURIComponent(name);
  try {
    if ($('kind').value === 'movie') {
      const m = await fetchJson(`/movies/${path}/watch-time`);
      const table = document.createElement('table');
      table.append(row('movie', m.slug), row('watched', hms(m.watchTime)), row('viewers', number(m.viewers)), row('events', number(m.events)));
      out.replaceChildren(table);
    } else {
      const [u, page] = await Promise.all([fetchJson(`/users/${path}/watch-time`), fetchJson(`/users/${path}/movies?limit=50`)]);
      const summary = document.createElement('p');
      summary.textContent = `${u.user}: ${hms(u.watchTime)} watched over ${number(u.movies)} movie(s)`;
      const table = document.createElement('table');
      const head = row('movie', 'latest moment', 'watched');
      head.querySelectorAll('td').forEach((td) => (td.outerHTML = `<th>${td.textContent}</th>`));
      table.append(head, ...page.items.map((m) => row(m.slug, hms(m.latestMoment), hms(m.watchTime))));
      out.replaceChildren(summary, table);
    }
  } catch (error) {
    const p = document.createElement('p');
    p.className = 'error';
    p.textContent = error.message;
    out.replaceChildren(p);
  }
});

poll();
setInterval(poll, 1000);
