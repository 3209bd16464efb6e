// ztk console: the theme switch, the signed-out notice and the live rows. No framework; the
// pages work without it (filters, paging, details and export are plain links and forms).
'use strict';
(function () {
  const root = document.documentElement;
  const saved = localStorage.getItem('ztk-theme');
  if (saved === 'dark' || saved === 'light') root.dataset.theme = saved;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  let signedOut = false;

  function showSignedOut() {
    if (signedOut) return;
    signedOut = true;
    const banner = document.getElementById('signed-out');
    if (banner) banner.hidden = false;
    document.body.classList.add('signed-out');
    const state = document.getElementById('live-state');
    if (state) { state.textContent = 'Signed out'; state.classList.add('off'); }
  }

  function theme() {
    const button = document.getElementById('theme');
    if (!button) return;
    button.addEventListener('click', () => {
      const dark = root.dataset.theme
        ? root.dataset.theme === 'dark'
        : window.matchMedia('(prefers-color-scheme: dark)').matches;
      root.dataset.theme = dark ? 'light' : 'dark';
      localStorage.setItem('ztk-theme', root.dataset.theme);
    });
  }

  // One request always waits at the gateway; it answers 401 the moment the session ends.
  async function watchSession() {
    if (!document.querySelector('meta[name="csrf-token"]')) return;
    let backoff = 1000;
    while (!signedOut) {
      try {
        const r = await fetch('/console/session', { credentials: 'same-origin', cache: 'no-store' });
        if (r.status === 401) { showSignedOut(); return; }
        if (!r.ok) { await sleep(backoff); backoff = Math.min(backoff * 2, 30000); } else backoff = 1000;
      } catch (e) {
        await sleep(backoff); backoff = Math.min(backoff * 2, 30000);
      }
    }
  }

  // Live rows: the gateway answers with the rows written after `seq` that match the page's
  // filter (HTML rendered by the same code as the page), as soon as there are some.
  function live() {
    const table = document.getElementById('rows');
    if (!table || !table.dataset.live) return;
    const tbody = table.tBodies[0];
    const state = document.getElementById('live-state');
    const pause = document.getElementById('pause');
    const marker = document.getElementById('new-rows');
    let seq = table.dataset.seq;
    let paused = false;
    let unseen = 0;
    const queue = [];

    const atTop = () => table.getBoundingClientRect().top >= -2;
    const showMarker = () => {
      marker.hidden = unseen === 0;
      marker.textContent = unseen + ' new' + (paused ? ' (paused)' : '');
    };
    const newer = (row, tr) => {
      const t = Number(tr.dataset.time);
      return row.time > t || (row.time === t && row.id > tr.dataset.id);
    };
    function apply(row) {
      const holder = document.createElement('tbody');
      holder.innerHTML = row.html;
      const tr = holder.firstElementChild;
      if (!tr) return;
      const existing = tbody.querySelector('tr[data-id="' + CSS.escape(row.id) + '"]');
      if (existing) {
        // Keep what the reader opened.
        existing.querySelectorAll('details[open]').forEach((d, i) => {
          const twin = tr.querySelectorAll('details')[i];
          if (twin) twin.open = true;
        });
        existing.replaceWith(tr);
        return;
      }
      let before = null;
      for (const other of tbody.rows) { if (newer(row, other)) { before = other; break; } }
      tbody.insertBefore(tr, before);
      tr.classList.add('fresh');
      const empty = document.getElementById('empty');
      if (empty) empty.hidden = true;
      if (!atTop()) unseen++;
    }
    pause.addEventListener('click', () => {
      paused = !paused;
      pause.setAttribute('aria-pressed', String(paused));
      pause.textContent = paused ? 'Resume' : 'Pause';
      state.textContent = paused ? 'Paused' : 'Live';
      state.classList.toggle('paused', paused);
      if (!paused) { unseen = 0; queue.splice(0).forEach(apply); }
      showMarker();
    });
    marker.addEventListener('click', () => {
      if (paused) pause.click();
      unseen = 0; showMarker();
      table.scrollIntoView({ block: 'start' });
      window.scrollTo({ top: 0 });
    });
    window.addEventListener('scroll', () => { if (atTop() && !paused && unseen) { unseen = 0; showMarker(); } }, { passive: true });

    (async () => {
      let backoff = 1000;
      while (!signedOut) {
        let r;
        try {
          r = await fetch(table.dataset.live + '&after_seq=' + encodeURIComponent(seq),
            { credentials: 'same-origin', cache: 'no-store' });
        } catch (e) {
          state.textContent = 'Reconnecting…'; state.classList.add('off');
          await sleep(backoff); backoff = Math.min(backoff * 2, 30000); continue;
        }
        if (r.status === 401) { showSignedOut(); return; }
        if (!r.ok) {
          state.textContent = 'Live updates failed (' + r.status + ')'; state.classList.add('off');
          await sleep(backoff); backoff = Math.min(backoff * 2, 30000); continue;
        }
        backoff = 1000;
        const answer = await r.json();
        seq = answer.through;
        table.dataset.seq = seq;
        state.classList.remove('off');
        state.textContent = paused ? 'Paused' : 'Live';
        for (const row of answer.rows) {
          if (paused) { queue.push(row); unseen++; } else apply(row);
        }
        showMarker();
      }
    })();
  }

  theme();
  watchSession();
  live();
})();
