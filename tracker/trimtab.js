/* trimtab.js: consent-first behaviour tracker, flicker-free slot swaps. Protocol: docs/protocol.md */
(() => {
  'use strict';
  const W = window, D = document, N = navigator, H = D.documentElement;
  if (W.trimtab?.consent) return;
  const me = D.currentScript || D.querySelector('script[data-key]') || { dataset: {} };
  const cfg = me.dataset;
  const num = (v, d) => (v > 0 || v === '0' ? +v : d);
  const KEY = cfg.key || '';
  const BASE = (cfg.endpoint || (me.src ? new URL(me.src).origin : location.origin)).replace(/\/$/, '');
  const QS = '?key=' + encodeURIComponent(KEY);
  const HIDE = num(cfg.hideMs, 300), FLUSH = num(cfg.flushMs, 1000), BATCH = num(cfg.batch, 20) || 1;
  const MAXQ = 500, SESSION = 18e5, GUARD = 1500, WIN = 500, LS = 'localStorage', SS = 'sessionStorage';
  const now = Date.now, perf = () => performance.now();

  const st = (area, k, v) => {
    try {
      const s = W[area];
      if (v === undefined) return s.getItem(k);
      v === null ? s.removeItem(k) : s.setItem(k, v);
    } catch (e) {}
    return null;
  };
  const rid = () => [...crypto.getRandomValues(new Uint32Array(4))].map((n) => n.toString(36)).join('');
  const cut = (s, n) => String(s == null ? '' : s).slice(0, n);
  // a signed QA force link (?tt_force=slot:variant~expiry~sig) holds for this tab
  const F = cut(new URLSearchParams(location.search).get('tt_force') || st(SS, 'tt_force'), 512);
  if (F) st(SS, 'tt_force', F);
  const ready = (f) => (D.readyState === 'loading' ? D.addEventListener('DOMContentLoaded', f) : f());
  const slots = () => [...D.querySelectorAll('[data-tt-slot]')];
  const names = () => slots().map((s) => s.dataset.ttSlot);

  let on = false, pers = false, listening = false, choice = null;
  // idOk: the server took uid (a hello or decide answered); until then posts go via decide,
  // whose answer hands a page without a valid signed visitor id its own (docs/security.md)
  let uid = '', sid = '', lastAt = 0, pageCat = '', idOk = false, told = false;
  let PV = rid(), at = '', idy = '';
  let q = [], unacked = [], dropped = 0, sent = 0, rejected = 0, posting = false;
  let ws = null, attempt = 0, reconnects = 0, stopWs = false, error = '';
  let flushT = 0, hideT = 0, revealed = false, io = null;
  // triggers: crossing one sends at once
  let tg = { depth: [], speed: [], dwell: [], events: [] }, da = [];
  const variants = {};
  const subs = { decision: [], swap: [], exposure: [] };
  const fire = (n, ...a) => subs[n].forEach((f) => { try { f(...a); } catch (e) {} });

  // -- events, transport
  const ev = (kind, fields) => {
    if (!on) return;
    const t = now();
    if (t - lastAt > SESSION) newSession();
    st(SS, 'tt_sat', (lastAt = t));
    const e = { kind, event_id: rid(), user_id: uid, session_id: sid, ts: t, page: path(), page_category: pageCat,
      page_view_id: PV, ...fields };
    push(e);
    if (tg.events.some((p) => hit(p, e))) flush();
  };
  const hit = (p, e) => {
    const [k, d = '*'] = p.split(':');
    return (k == '*' || k == e.kind || k == e.name) && (d == '*' || d == e.element_kind || d == e.element || d == e.value);
  };
  const trim = () => {
    const x = q.length - MAXQ;
    if (x > 0) { q.splice(0, x); dropped += x; }
  };
  const push = (e) => {
    q.push(e);
    trim();
    if (q.length >= BATCH) flush();
    else if (!flushT) flushT = setTimeout(flush, FLUSH);
  };
  const url = (p) => BASE + p + QS;
  const post = (b) => (idOk ? [url('/v1/events'), JSON.stringify(b)]
    : [url('/v1/decide'), JSON.stringify({ user_id: uid, session_id: sid, events: b })]);
  const who = (v) => {
    idOk = true;
    if (!v || v == uid) return;
    for (const e of q.concat(...unacked)) if (e.user_id == uid) e.user_id = v;
    st(LS, 'tt_uid', (uid = v));
    if (!told) tell(); // a replaced id is a new profile: it needs the consent on record
  };
  const backoff = () => {
    const d = Math.min(3e4, 500 * 2 ** attempt++);
    return d / 2 + (Math.random() * d) / 2;
  };
  const unflush = () => { clearTimeout(flushT); flushT = 0; };
  const flush = () => {
    unflush();
    if (!on || !q.length) return;
    if (ws && ws.readyState === 1) {
      while (q.length) {
        const b = q.splice(0, BATCH);
        ws.send(JSON.stringify({ type: 'events', events: b }));
        unacked.push(b);
      }
    } else if (!posting) {
      const b = q.splice(0, 50), [u, body] = post(b);
      posting = true;
      fetch(u, { method: 'POST', body, keepalive: true, credentials: 'omit' })
        .then((r) => {
          if (r.status === 429 || r.status >= 500) throw 0;
          if (!r.ok) dropped += b.length;
          else sent += b.length;
          return r.ok && r.json();
        })
        .then((d) => {
          if (d) who(d.visitor_id);
          posting = false;
          if (q.length) flush();
        })
        .catch(() => {
          posting = false;
          q.unshift(...b);
          trim();
          unflush();
          flushT = setTimeout(flush, backoff());
        });
    }
  };
  const beacon = () => {
    unflush();
    while (on && q.length && N.sendBeacon) {
      const b = q.slice(0, 50);
      if (!N.sendBeacon(...post(b))) break;
      q.splice(0, b.length);
      sent += b.length;
    }
  };
  const path = () => cut(location.pathname, 128);
  // hello: this page view, its slots and first events (again after an SPA navigation)
  const hi = (s) => {
    const b = q.splice(0, BATCH);
    unacked.push(b);
    s.send(JSON.stringify({ type: 'hello', user_id: uid, session_id: sid, page: path(), page_category: pageCat,
      page_view_id: PV, slots: pers || F ? names() : [], events: b, force: F }));
    flush();
  };
  // single-page apps: a new path in the history is a new page view
  const nav = (again) => {
    if (!again && path() === at) return;
    at = path();
    PV = rid();
    if (!on) return;
    ev('page_view', { url: cut(location.href, 2048), title: cut(D.title, 512), slots: names() });
    if (io) D.querySelectorAll('[data-tt-id],[data-tt-slot]').forEach((el) => io.observe(el));
    if (ws && ws.readyState === 1) hi(ws);
  };
  const connect = (early) => {
    if (!(on || early) || ws || stopWs || !W.WebSocket) return;
    const s = (ws = new WebSocket(BASE.replace(/^http/, 'ws') + '/v1/live' + QS));
    s.onopen = () => ready(() => hi(s));
    s.onmessage = (m) => {
      let d;
      try { d = JSON.parse(m.data); } catch (e) { return; }
      if (d.type === 'ack') {
        attempt = 0;
        const b = unacked.shift();
        if (b) sent += b.length;
        rejected += (d.rejected || []).length;
      } else if (d.type === 'decisions') {
        attempt = 0;
        who(d.visitor_id);
        if (d.triggers) { da = (tg = { ...tg, ...d.triggers }).dwell.map(() => 0); hov.forEach((h, el) => arm(el, h)); }
        decide(d.decisions);
      } else if (d.type === 'error') error = cut(d.reason, 200);
    };
    s.onclose = (e) => {
      if (ws !== s) return;
      ws = null;
      q.unshift(...unacked.flat());
      unacked = [];
      trim();
      if (!on) return;
      if (e.code === 4401 || e.code === 4403) stopWs = true;
      else { reconnects++; setTimeout(connect, backoff()); }
      flush();
    };
  };

  // -- identity, consent
  const newSession = () => {
    sid = rid();
    st(SS, 'tt_sid', sid);
    st(SS, 'tt_sat', (lastAt = now()));
    ev('context', context());
  };
  const context = () => {
    const ua = N.userAgent;
    const device = /iPad|Tablet/i.test(ua) ? 'tablet' : /Mobi|Android/.test(ua) ? 'mobile' : 'desktop';
    const fam = [['Edge', /Edg\//], ['Firefox', /Firefox\//], ['Chrome', /Chrome\/|CriOS/], ['Safari', /Safari\//]]
      .find((f) => f[1].test(ua));
    return { device, viewport_w: innerWidth, viewport_h: innerHeight, ua_family: fam ? fam[0] : 'Other',
      tz_offset_min: -new Date().getTimezoneOffset(), language: cut(N.language, 32) };
  };
  const start = (p, explicit) => {
    const was = listening, wasPers = pers;
    on = true;
    choice = p;
    pers = !!p.personalization;
    uid = idy || cfg.visitorId || st(LS, 'tt_uid') || uid || rid();
    st(LS, 'tt_uid', uid);
    if (!was) {
      sid = st(SS, 'tt_sid');
      lastAt = +st(SS, 'tt_sat') || 0;
    }
    const fresh = !sid || now() - lastAt > SESSION;
    if (fresh) { lastAt = now(); newSession(); }
    if (explicit || fresh) tell();
    if (!was) {
      at = path();
      ev('page_view', { url: cut(location.href, 2048), title: cut(D.title, 512),
        referrer: cut(D.referrer, 2048), slots: names() });
      listen();
      connect();
    }
    if (pers && !wasPers && was && ws) ws.close();
    if (!pers) restore();
  };
  const tell = () => { told = true; ev('consent', { purposes: { analytics: true, personalization: pers } }); };
  const stop = (p) => {
    on = pers = false;
    choice = p;
    q = [];
    unacked = [];
    if (ws) ws.close();
    st(LS, 'tt_uid', null);
    st(LS, 'tt_consent', JSON.stringify(p));
    ['tt_sid', 'tt_sat'].forEach((k) => st(SS, k, null));
    away();
    vis.clear();
    restore();
  };
  const consent = (p) => {
    p = { analytics: !!(p && p.analytics), personalization: !!(p && p.analytics && p.personalization) };
    ready(() => {
      if (!p.analytics) return stop(p);
      st(LS, 'tt_consent', JSON.stringify(p));
      start(p, true);
    });
  };

  // -- slots
  const sx = (el) => el._tt || (el._tt = { def: el.innerHTML, t: -1e9, inside: false });
  const decide = (list) => {
    if (!pers || !Array.isArray(list)) return;
    for (const d of list) {
      const el = d && D.querySelector('[data-tt-slot="' + CSS.escape(String(d.slot)) + '"]');
      if (!el) continue;
      fire('decision', d);
      apply(el, d);
    }
    reveal();
  };
  const apply = (el, d) => {
    const x = sx(el);
    clearTimeout(x.w);
    x.pend = null;
    if (d.variant === x.shown) { // re-decided: expose again
      if (d.decision_id !== x.id) { x.id = d.decision_id; exp(x, d); if (x.vis && revealed) expose(el); }
      return;
    }
    if (revealed && (x.inside || perf() - x.t < GUARD)) {
      x.pend = d;
      if (!x.inside) x.w = setTimeout(() => apply(el, d), GUARD - (perf() - x.t) + 20);
      return;
    }
    render(el, d);
  };
  const render = (el, d) => {
    const x = sx(el), p = d.payload;
    forget(el);
    el.innerHTML = p && typeof p.html === 'string' ? p.html : x.def;
    x.shown = variants[d.slot] = d.variant;
    x.id = d.decision_id;
    el.dataset.ttVariant = d.variant;
    if (revealed) {
      el.classList.remove('tt-in');
      void el.offsetWidth;
      el.classList.add('tt-in');
    }
    exp(x, d);
    if (io) el.querySelectorAll('[data-tt-id]').forEach((c) => io.observe(c));
    fire('swap', el, d);
    if (x.vis && revealed) expose(el);
  };
  const exp = (x, d) => (x.exp = { slot: d.slot, variant: d.variant, decision_id: cut(d.decision_id, 128) });
  const restore = () => slots().forEach((el) => {
    const x = el._tt;
    if (!x || x.shown == null) return;
    forget(el);
    el.innerHTML = x.def;
    x.shown = x.pend = x.exp = x.id = null;
    delete el.dataset.ttVariant;
  });
  const forget = (el) => el.querySelectorAll('[data-tt-id]').forEach((c) => {
    hoverEnd(c);
    const s = vis.get(c);
    if (s) { vOff(c, s); vis.delete(c); }
    if (io) io.unobserve(c);
  });
  const expose = (el) => {
    const e = el._tt.exp;
    if (!e) return;
    el._tt.exp = null;
    ev('exposure', e);
    fire('exposure', e);
  };
  const reveal = () => {
    if (revealed) return;
    revealed = true;
    clearTimeout(hideT);
    H.classList.remove('tt-hide');
    slots().forEach((el) => el._tt && el._tt.vis && expose(el));
  };

  // -- behaviour
  const desc = (el) => ({ element: cut(el.dataset.ttId, 128), element_kind: cut(el.dataset.ttKind, 64),
    category: cut(el.dataset.ttCat, 64), slot: cut(el.closest('[data-tt-slot]')?.dataset.ttSlot, 128),
    nav: !!el.closest('[data-tt-nav]') });
  const hov = new Map();
  const mine = (w, el) => w[0] == 'total' || el.dataset[{ element: 'ttId', kind: 'ttKind', category: 'ttCat' }[w[0]]] == w[1];
  const dwell = (el, h, end) => {
    const ms = Math.round(perf() - h.t0 - h.sent);
    if (ms <= 0 || (end && ms < 100)) return;
    h.sent += ms;
    tg.dwell.forEach((w, i) => mine(w, el) && (da[i] += ms));
    ev('hover', { ...desc(el), dwell_ms: ms });
  };
  const hoverStart = (el) => {
    if (hov.has(el)) return;
    const h = { t0: perf(), sent: 0 };
    h.ti = [1000, 3000].map((ms) => setTimeout(() => dwell(el, h), ms));
    arm(el, h);
    hov.set(el, h);
  };
  // sent just past a watched dwell
  const arm = (el, h) => tg.dwell.forEach((w, i) => mine(w, el) && w[2] >= da[i] &&
    h.ti.push(setTimeout(() => { dwell(el, h); flush(); }, w[2] - da[i] - perf() + h.t0 + h.sent + 5)));
  const hoverEnd = (el) => {
    const h = hov.get(el);
    if (!h) return;
    hov.delete(el);
    h.ti.forEach(clearTimeout);
    dwell(el, h, true);
  };

  const vis = new Map();
  const vTotal = (s) => s.acc + (s.t0 ? perf() - s.t0 : 0);
  const vReport = (el, s) => {
    const t = vTotal(s), ms = Math.round(t - s.sent);
    if (t < 1000 || ms < 100) return;
    s.sent += ms;
    ev('visible', { ...desc(el), visible_ms: ms, fraction: Math.min(1, Math.round(s.frac * 100) / 100) });
  };
  const vOn = (el, s) => {
    if (s.t0 || D.hidden || !on) return;
    s.t0 = perf();
    const tick = () => {
      const t = vTotal(s);
      s.ti = setTimeout(() => { vReport(el, s); tick(); }, t < 1000 ? 1005 - t : 5000);
    };
    tick();
  };
  const vOff = (el, s) => {
    clearTimeout(s.ti);
    if (!s.t0) return;
    s.acc += perf() - s.t0;
    s.t0 = 0;
    vReport(el, s);
  };
  const seen = (entries) => entries.forEach((e) => {
    const el = e.target, r = e.intersectionRatio;
    const v = e.isIntersecting && (r >= 0.5 || e.intersectionRect.height >= innerHeight / 2);
    if (el.dataset.ttSlot != null) {
      sx(el).vis = v;
      if (v && revealed) expose(el);
    }
    if (!el.dataset.ttId || !on) return;
    let s = vis.get(el);
    if (!s) vis.set(el, (s = { acc: 0, t0: 0, sent: 0, frac: 0 }));
    if (r > s.frac) s.frac = r;
    s.v = v;
    v ? vOn(el, s) : vOff(el, s);
  });

  // speed: px per s over the last WIN ms (at least 150); jumps do not count
  let sPend = false, ly = 0, win = [], jumpT = 0, last = 0, maxD = 0, sentD = 0, endT = 0, vel = 0;
  const depth = () => {
    const h = H.scrollHeight;
    return h ? Math.min(1, (scrollY + innerHeight) / h) : 1;
  };
  const sEmit = (d) => ev('scroll', { depth: Math.round(d * 1e4) / 1e4, velocity: Math.round(vel) });
  const sample = () => {
    sPend = false;
    if (!on) return;
    const t = perf(), y = scrollY, was = maxD, v0 = Math.abs(vel);
    if (Math.abs(y - ly) > innerHeight || t < jumpT) win = [];
    else if (t - last > 150) win = [[t - 16, ly]]; // a new gesture starts from where it stood
    win.push([t, y]);
    while (win[1] && win[1][0] <= t - WIN) win.shift();
    vel = ((y - win[0][1]) * 1000) / Math.max(150, Math.min(WIN, t - win[0][0]));
    ly = y;
    last = t;
    const d = depth();
    if (d > maxD) maxD = d;
    const now = tg.depth.some((x) => was <= x && maxD > x) || tg.speed.some((x) => v0 <= x && Math.abs(vel) > x);
    if (now || maxD - sentD >= 0.05) {
      sentD = maxD;
      sEmit(d);
      if (now) flush();
    }
    if (!endT) endT = setTimeout(sEnd, 150);
  };
  const sEnd = () => {
    const idle = perf() - last;
    if (idle < 150) { endT = setTimeout(sEnd, 150 - idle); return; }
    endT = 0;
    if (vel) sEmit(depth());
    vel = 0;
  };

  const away = () => {
    hov.forEach((h, el) => hoverEnd(el));
    vis.forEach((s, el) => vOff(el, s));
    beacon();
  };
  const slotTouch = (e) => {
    const s = e.target.closest && e.target.closest('[data-tt-slot]');
    if (s) sx(s).t = perf();
  };
  const listen = () => {
    if (listening) return;
    listening = true;
    ly = scrollY;
    maxD = sentD = depth();
    addEventListener('scroll', () => {
      if (!sPend) { sPend = true; requestAnimationFrame(sample); }
    }, { passive: true });
    D.addEventListener('pointerenter', (e) => {
      const t = e.target;
      if (!t.dataset) return;
      if (t.dataset.ttSlot != null) sx(t).inside = true;
      if (t.dataset.ttId && on) hoverStart(t);
    }, true);
    D.addEventListener('pointerleave', (e) => {
      const t = e.target;
      if (!t.dataset) return;
      if (t.dataset.ttSlot != null) {
        const x = sx(t);
        x.inside = false;
        x.t = perf();
        if (x.pend) apply(t, x.pend);
      }
      if (t.dataset.ttId) hoverEnd(t);
    }, true);
    ['pointerdown', 'keydown', 'focusin'].forEach((n) => D.addEventListener(n, slotTouch, true));
    D.addEventListener('keydown', (e) => { if (/Page|Home|End|^ $/.test(e.key)) jumpT = perf() + WIN; }, true);
    D.addEventListener('click', (e) => {
      const el = e.target.closest && e.target.closest('[data-tt-id]');
      if (el) ev('click', desc(el));
    }, true);
    addEventListener('pagehide', away);
    D.addEventListener('visibilitychange', () => {
      if (D.hidden) away();
      else { vis.forEach((s, el) => s.v && vOn(el, s)); connect(); }
    });
    if (W.IntersectionObserver) {
      io = new IntersectionObserver(seen, { threshold: [...Array(11)].map((_, i) => i / 10) });
      D.querySelectorAll('[data-tt-id],[data-tt-slot]').forEach((el) => io.observe(el));
    }
  };

  // -- API
  const api = {
    consent,
    track: (name, value) => ev('custom', { name: cut(name, 128),
      value: value && typeof value == 'object' ? String(value) : value ?? null }),
    on: (name, fn) => { if (subs[name]) subs[name].push(fn); },
    flush,
    push: (fn) => fn(api),
    page: () => nav(1),
    // a logged-in reader: an opaque id of the account (trimtab.client.reader_id), every device
    identify: (id) => {
      id = cut(id, 128);
      if (!id || id === uid) return;
      idy = id;
      if (!on) return;
      uid = id;
      idOk = false; // until the server takes it (a signed visitor id: docs/security.md)
      q.forEach((e) => (e.user_id = id)); // not sent yet: this page view is the account's
      st(LS, 'tt_uid', uid);
      ev('consent', { purposes: { analytics: true, personalization: pers } }); // the account's too
      if (ws && ws.readyState === 1) hi(ws);
    },
    state: () => ({
      consent: choice, user_id: uid, session_id: sid, page_view_id: PV,
      queued: q.length, unacked: unacked.reduce((n, b) => n + b.length, 0), sent, dropped, rejected,
      ws: ws ? ['connecting', 'open', 'closing', 'closed'][ws.readyState] : 'none',
      reconnects, error, revealed, variants: { ...variants },
    }),
  };
  ['pushState', 'replaceState'].forEach((m) => {
    const o = history[m];
    history[m] = function (...a) { const r = o.apply(this, a); setTimeout(nav); return r; };
  });
  addEventListener('popstate', () => setTimeout(nav));
  const pre = W.trimtab;
  W.trimtab = api;

  let stored = null;
  try { stored = JSON.parse(st(LS, 'tt_consent')); } catch (e) {}
  const implied = cfg.consent === 'implied' && N.globalPrivacyControl !== true;
  choice = stored && stored.analytics != null ? stored : null;
  const initial = choice ? (choice.analytics ? choice : null) : implied ? { analytics: true, personalization: true } : null;
  if (initial && initial.personalization && HIDE > perf()) {
    const css = D.createElement('style');
    css.textContent = '.tt-hide [data-tt-slot]{visibility:hidden}';
    (D.head || H).appendChild(css);
    H.classList.add('tt-hide');
    hideT = setTimeout(reveal, HIDE - perf());
  }
  if (initial) connect(1);
  ready(() => {
    pageCat = cut((D.querySelector('meta[name="tt-category"]') || {}).content, 64);
    slots().forEach(sx);
    if (initial) start(initial, false);
    if (!hideT) reveal();
    if (Array.isArray(pre)) pre.forEach((f) => { try { f(api); } catch (e) {} });
  });
})();
