/* trimtab console: plain JavaScript, no build step. Charts by uPlot (vendored, MIT). */
(() => {
  'use strict';
  const $ = (s) => document.querySelector(s);
  let csrf = '';
  let current = 'live';

  // -- small helpers: elements built with textContent, never from HTML strings
  const h = (tag, attrs, ...kids) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'on') Object.entries(v).forEach(([ev, f]) => el.addEventListener(ev, f));
      else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  };
  const fmt = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Number(x).toFixed(d));
  const pct = (x) => (x === null || x === undefined ? '–' : (100 * x).toFixed(1) + '%');
  const time = (ts) => new Date(ts * 1000).toLocaleTimeString();
  const table = (heads, rows) =>
    h('table', {}, h('thead', {}, h('tr', {}, heads.map((x) => h('th', {}, x)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : h('td', {}, c)))))));

  const api = async (path, body) => {
    const init = body === undefined ? {} : {
      method: 'POST', body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
    };
    const r = await fetch(path, { credentials: 'same-origin', ...init });
    if (r.status === 401) { location.href = '/console/login'; throw new Error('logged out'); }
    const data = await r.json().catch(() => ({}));
    return { ok: r.ok, status: r.status, data };
  };

  // -- charts
  const palette = ['#1a73e8', '#e8710a', '#188038', '#d93025', '#9334e6', '#12a4af', '#f9ab00', '#5f6368'];
  const plots = new Map();
  const chart = (id, el, title, names, xs, ys, opts = {}) => {
    const data = [xs, ...ys];
    const width = Math.max(320, (el.clientWidth || 800) - 10);
    let plot = plots.get(id);
    if (plot && plot.series.length === names.length + 1 && plot.root.isConnected) {
      plot.setData(data);
      return plot;
    }
    if (plot) plot.destroy();
    el.textContent = '';
    plot = new uPlot({
      title, width, height: opts.height || 200,
      scales: { x: { time: true }, y: opts.percent ? { range: [0, 1] } : {} },
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], width: 2,
        spanGaps: false, value: (u, v) => (opts.percent ? pct(v) : fmt(v, 2)) }))],
      axes: [{}, { values: (u, vals) => vals.map((v) => (opts.percent ? Math.round(100 * v) + '%' : v)) }],
    }, data, el);
    plots.set(id, plot);
    return plot;
  };

  // -- tabs
  const loaders = {};
  const show = (name) => {
    current = name;
    document.querySelectorAll('#tabs button').forEach((b) => b.classList.toggle('on', b.dataset.tab === name));
    document.querySelectorAll('.tab').forEach((s) => s.classList.toggle('on', s.id === name));
    if (loaders[name]) loaders[name]();
  };
  document.querySelectorAll('#tabs button').forEach((b) => b.addEventListener('click', () => show(b.dataset.tab)));
  setInterval(() => { if (current !== 'live' && current !== 'visitor' && current !== 'config' && loaders[current]) loaders[current](); }, 10000);

  // -- live
  const live = { t: [], events: [], decisions: [], pushes: [], errors: [] };
  let firstRender = false;
  const onStats = (s) => {
    $('#t-events').textContent = fmt(s.events_per_s);
    $('#t-decisions').textContent = fmt(s.decisions_per_s);
    $('#t-pushes').textContent = fmt(s.pushes_per_s);
    $('#t-decide').textContent = s.decide.n ? `${fmt(s.decide.p50_ms, 2)} / ${fmt(s.decide.p99_ms, 2)} ms` : '–';
    $('#t-push').textContent = s.push.n ? `${fmt(s.push.p50_ms, 2)} / ${fmt(s.push.p99_ms, 2)} ms` : '–';
    $('#t-errors').textContent = fmt(s.errors_per_s);
    $('#t-pages').textContent = s.open_pages;
    const state = $('#t-state');
    state.textContent = s.degraded.length ? 'degraded' : 'ok';
    state.title = s.degraded.join('; ');
    state.className = s.degraded.length ? 'error' : '';
    for (const [k, v] of [['events', s.events_per_s], ['decisions', s.decisions_per_s], ['pushes', s.pushes_per_s], ['errors', s.errors_per_s]]) live[k].push(v);
    live.t.push(Math.round(s.ts));
    if (live.t.length > 300) Object.values(live).forEach((a) => a.shift());
    if (current === 'live') {
      chart('live', $('#live-chart'), 'per second', ['events', 'decisions', 'pushes', 'errors'], live.t,
        [live.events, live.decisions, live.pushes, live.errors]);
    }
    if (!firstRender) { firstRender = true; performance.mark('tt-console-first-render'); document.body.dataset.ready = '1'; }
  };
  const onDecisions = (list) => {
    const body = $('#stream');
    for (const d of list) {
      const user = h('a', { class: 'user', on: { click: () => inspect(d.user) } }, d.user.slice(0, 12));
      const row = h('tr', { class: 'fresh', 'data-slot': d.slot, 'data-source': d.source },
        h('td', {}, time(d.ts)), h('td', {}, user), h('td', {}, d.slot), h('td', {}, d.variant),
        h('td', {}, d.source), h('td', {}, d.rule || '–'), h('td', { class: 'reason' }, d.reason));
      body.prepend(row);
      setTimeout(() => row.classList.remove('fresh'), 1500);
    }
    while (body.children.length > 100) body.lastChild.remove();
  };
  const connect = () => {
    const es = new EventSource('/console/stream');
    es.addEventListener('open', () => { $('#conn').textContent = 'live'; $('#conn').className = 'badge ok'; });
    es.addEventListener('stats', (e) => onStats(JSON.parse(e.data)));
    es.addEventListener('decisions', (e) => onDecisions(JSON.parse(e.data)));
    es.addEventListener('logout', () => { es.close(); location.href = '/console/login'; });
    es.addEventListener('error', () => {
      $('#conn').textContent = 'reconnecting…'; $('#conn').className = 'badge bad';
      if (es.readyState === EventSource.CLOSED) api('/console/api/session').then(() => setTimeout(connect, 2000)).catch(() => {});
    });
  };

  // -- slots
  loaders.slots = async () => {
    const { data } = await api('/console/api/slots');
    const root = $('#slots-body');
    if (!root.children.length || root.dataset.n !== String(data.slots.length)) {
      root.textContent = '';
      root.dataset.n = data.slots.length;
      for (const s of data.slots) {
        root.append(h('div', { class: 'card', id: 'slot-' + s.name },
          h('h3', {}, s.name, ' ', h('span', { class: 'muted' }, s.description)),
          h('div', { class: 'rules' }), h('div', { class: 'chart variants' }), h('div', { class: 'chart rules-chart' })));
      }
    }
    for (const s of data.slots) {
      const card = document.getElementById('slot-' + s.name);
      const rules = card.querySelector('.rules');
      rules.textContent = '';
      rules.append(table(['#', 'rule', 'kind', 'when', 'shows', 'on'], [
        ...s.rules.map((r) => [r.position, r.id, r.kind, r.when, r.shows, r.enabled ? 'yes' : 'no']),
        ['', '(default)', '', 'no rule applies', s.default, 'yes'],
      ]));
      const ser = s.series;
      if (!ser) { card.querySelector('.variants').textContent = 'no decisions yet'; continue; }
      const vs = Object.keys(ser.variants), rs = Object.keys(ser.rules);
      chart('v-' + s.name, card.querySelector('.variants'), 'share of each variant (10 s buckets)', vs, data.t, vs.map((v) => ser.variants[v]), { percent: true });
      chart('r-' + s.name, card.querySelector('.rules-chart'), 'rule hit rate', rs, data.t, rs.map((r) => ser.rules[r]), { percent: true });
    }
  };

  // -- experiments
  const confirmBox = (label, name, send) => {
    const input = h('input', { placeholder: `type ${name} to confirm`, class: 'confirm-input', size: 24 });
    const box = h('span', { class: 'confirm', hidden: true }, input,
      h('button', { class: 'confirm-go', on: { click: () => send(input.value) } }, 'Confirm ' + label),
      h('button', { on: { click: () => { box.hidden = true; } } }, 'Cancel'));
    const open = h('button', { class: 'action', 'data-action': label, on: { click: () => { box.hidden = false; input.focus(); } } }, label);
    return h('span', {}, open, box);
  };
  loaders.experiments = async () => {
    const { data } = await api('/console/api/experiments');
    const root = $('#experiments-body');
    root.textContent = '';
    if (!data.experiments.length) root.append(h('p', {}, 'No experiments declared.'));
    for (const x of data.experiments) {
      const out = h('span', { class: 'outcome' });
      const act = (action, variant) => async (typed) => {
        const r = await api(`/console/api/experiments/${encodeURIComponent(x.name)}/${action}`, { confirm: typed, variant });
        out.textContent = r.ok ? `done: config version ${r.data.version} (${r.data.note})` : (r.data.error || JSON.stringify(r.data));
        out.className = r.ok ? 'outcome' : 'outcome error';
        if (r.ok) setTimeout(loaders.experiments, 300);
      };
      const actions = [];
      if (x.status === 'running') actions.push(confirmBox('stop', x.name, act('stop')));
      if (x.status === 'stopped') actions.push(confirmBox('start', x.name, act('start')));
      if (x.status === 'running' || x.status === 'stopped') {
        for (const v of x.variations) actions.push(confirmBox('ship ' + v, x.name, act('ship', v)));
      }
      const card = h('div', { class: 'card experiment', 'data-name': x.name },
        h('h3', {}, x.name, ' ', h('span', { class: 'badge status status-' + x.status }, x.status),
          x.shipped ? ` (${x.shipped} for everyone)` : ''),
        h('p', { class: 'muted' }, `slots: ${x.slots.join(', ')}`),
        h('div', { class: 'row' }, actions, out));
      const rep = x.report;
      if (!rep) card.append(h('p', { class: 'muted' }, x.report_problem));
      else {
        // the report's integrity checks (sample ratio with its alarm threshold, orphans, …)
        for (const c of rep.integrity) card.append(h('p', { class: c.status === 'error' ? 'error' : '' },
          `${c.status === 'ok' ? '✓' : c.status === 'warn' ? '⚠' : '✗'} ${c.name}: ${c.message}`));
        card.append(table(['arm', 'exposed users', 'weight'], rep.arms.map((a) => [a.name, a.users, fmt(a.weight, 2)])));
        for (const m of rep.metrics) {
          card.append(h('h4', {}, m.name + (m.guardrail ? ' (guardrail)' : '')));
          card.append(table(['arm', 'users', 'mean', 'effect', 'interval', 'p'], m.arms.map((a) => [
            a.name, a.n, fmt(a.mean, 4), a.baseline ? 'baseline' : (a.error || pct(a.effect)),
            // no comparison (an error says why): no interval or p to show either
            a.baseline || a.error || !a.ci ? '' : `${pct(a.ci[0])} … ${pct(a.ci[1])}`,
            a.baseline || a.error ? '' : fmt(a.p_value, 4)])));
          const pts = m.over_time.filter((p) => p.effects && p.effects[1]);
          if (pts.length > 1) {
            const el = h('div', { class: 'chart' });
            card.append(el);
            chart(`x-${x.name}-${m.name}`, el, `${m.name}: effect of ${m.arms[1] ? m.arms[1].name : 'arm 1'} and its ${rep.sequential ? 'sequential ' : ''}interval over time`,
              ['estimate', 'lower', 'upper'], pts.map((p) => p.t), [0, 1, 2].map((i) => pts.map((p) => p.effects[1][i])));
          }
        }
      }
      root.append(card);
    }
  };

  // -- bandits
  loaders.bandits = async () => {
    const { data } = await api('/console/api/bandits');
    const root = $('#bandits-body');
    root.textContent = '';
    if (!data.bandits.length) root.append(h('p', {}, 'No bandit policies in this config.'));
    for (const b of data.bandits) {
      const g = b.guardrail;
      const guard = !g.declared ? 'no guardrail declared'
        : g.tripped ? 'TRIPPED: ' + g.tripped
          : `watching: policy ${g.policy ? pct(g.policy.reward_rate) : '–'} vs default ${g.control ? pct(g.control.reward_rate) : '–'} (trips under ${pct(g.min_ratio)} of the default after ${g.min_samples} exposures)`;
      const card = h('div', { class: 'card' }, h('h3', {}, `${b.name} `, h('span', { class: 'muted' }, `${b.type} on slot ${b.slot}, ${b.updates} updates`)),
        h('p', { class: g.tripped ? 'error' : '' }, 'guardrail: ' + guard));
      root.append(card);
      const ser = b.series;
      if (!ser) { card.append(h('p', { class: 'muted' }, 'no policy decisions yet')); continue; }
      const arms = Object.keys(ser.overall);
      const el = h('div', { class: 'chart' });
      card.append(el);
      chart('b-' + b.name, el, 'arm probabilities over time (share of the policy\'s picks), all readers', arms, data.t, arms.map((a) => ser.overall[a]), { percent: true });
      const last = (xs) => { for (let i = xs.length - 1; i >= 0; i--) if (xs[i] !== null) return xs[i]; return null; };
      card.append(h('h4', {}, 'per reader segment (latest 10 s with picks)'));
      card.append(table(['segment', ...arms], Object.entries(ser.by_segment).map(([seg, per]) => [seg, ...arms.map((a) => pct(last(per[a] || [])))])));
    }
  };

  // -- visitor
  const inspect = (id) => { $('#visitor-id').value = id; show('visitor'); loaders.visitor(); };
  loaders.visitor = async () => {
    const id = $('#visitor-id').value.trim();
    if (!id) return;
    const { ok, data } = await api('/console/api/visitor?user_id=' + encodeURIComponent(id));
    const root = $('#visitor-body');
    root.textContent = '';
    if (!ok) { root.append(h('p', { class: 'error' }, data.error)); return; }
    root.append(h('p', {}, `visitor ${data.user}, session ${data.session || '–'}`));
    for (const [scope, values] of Object.entries(data.features)) {
      const keys = Object.keys(values);
      if (!keys.length) continue;
      root.append(h('h4', {}, `features: ${scope}`));
      root.append(table(['name', 'value'], keys.map((k) => [k, JSON.stringify(values[k])])));
    }
    root.append(h('h4', {}, 'recent events'));
    root.append(table(['time', 'kind', 'detail'], data.events.map((e) => {
      const { kind, ts, session, ...rest } = e;
      return [time(ts / 1000), kind, JSON.stringify(rest)];
    })));
    root.append(h('h4', {}, 'decisions and why'));
    root.append(table(['time', 'slot', 'variant', 'source', 'rule', 'why'], data.decisions.map((d) =>
      [time(d.ts / 1000), d.slot, d.variant, d.source, d.rule || '–', h('td', { class: 'reason' }, d.reason)])));
  };
  $('#visitor-form').addEventListener('submit', (e) => { e.preventDefault(); loaders.visitor(); });

  // -- config
  let configVersion = 0;
  const say = (x) => { $('#config-out').textContent = typeof x === 'string' ? x : JSON.stringify(x, null, 2); };
  const candidate = () => {
    try { return JSON.parse($('#config-text').value); } catch (e) { say('not valid JSON: ' + e.message); return null; }
  };
  loaders.config = async () => {
    const { data } = await api('/console/api/config');
    configVersion = data.version;
    $('#config-head').textContent = `Serving config version ${data.version}. Edit it as JSON; Apply records a new version with your name and note.`;
    $('#config-text').value = JSON.stringify(data.config, null, 2);
    const body = $('#config-history');
    body.textContent = '';
    for (const v of data.history) {
      const changes = v.diff.slice(0, 6).map((c) => `${c.path} ${c.op}`).join('\n') + (v.diff.length > 6 ? `\n… ${v.diff.length - 6} more` : '');
      const back = v.version === data.version ? h('span', { class: 'muted' }, 'current')
        : confirmBox('roll back', String(v.version), async (typed) => {
          if (typed !== String(v.version)) { say(`type ${v.version} to confirm`); return; }
          const r = await api('/console/api/config/rollback', { version: v.version });
          say(r.ok ? `rolled back: version ${r.data.version} serves version ${v.version}'s config` : r.data);
          loaders.config();
        });
      body.append(h('tr', { 'data-version': v.version }, h('td', {}, v.version), h('td', {}, new Date(v.at * 1000).toLocaleString()),
        h('td', {}, v.who), h('td', {}, v.origin), h('td', {}, v.note), h('td', {}, h('pre', {}, changes)), h('td', {}, back)));
    }
  };
  $('#config-validate').addEventListener('click', async () => {
    const c = candidate(); if (!c) return;
    const r = await api('/console/api/config/validate', { config: c });
    say(r.ok ? 'valid' : r.data.errors ? r.data.errors.map((e) => `${e.path}: ${e.problem}`).join('\n') : r.data);
  });
  $('#config-dry').addEventListener('click', async () => {
    const c = candidate(); if (!c) return;
    const r = await api('/console/api/config/dry-run', { config: c, last: +$('#config-last').value });
    say(r.ok ? `${r.data.changed} of the last ${r.data.checked} logged decisions would change\n` + JSON.stringify(r.data.by_slot, null, 2)
      : r.data.errors ? r.data.errors.map((e) => `${e.path}: ${e.problem}`).join('\n') : r.data);
  });
  $('#config-apply').addEventListener('click', async () => {
    const c = candidate(); if (!c) return;
    const r = await api('/console/api/config/apply', { config: c, note: $('#config-note').value, base_version: configVersion });
    say(r.ok ? `applied: version ${r.data.version}, ${r.data.changes} change(s)` : r.data.errors ? r.data.errors.map((e) => `${e.path}: ${e.problem}`).join('\n') : r.data);
    if (r.ok) loaders.config();
  });

  // -- start
  $('#logout').addEventListener('click', async () => { await api('/console/logout', {}); location.href = '/console/login'; });
  api('/console/api/session').then(({ data }) => {
    csrf = data.csrf;
    $('#who').textContent = data.name;
    connect();
  });
})();
