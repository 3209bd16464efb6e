// kubectl in the browser: a line editor in front of the gateway's shell socket
// (src/shell/session.rs). While no command runs, keys edit the line here (history stays in
// this page only: command lines can hold secrets); while one runs, every key goes to its
// terminal on the gateway (Ctrl-C included).
(() => {
  'use strict';
  const el = document.getElementById('terminal');
  if (!el || !window.Terminal || !window.FitAddon) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const { cluster, namespace } = el.dataset;
  const status = document.getElementById('shell-status');
  const manifestState = document.getElementById('manifest-state');
  const clearButton = document.getElementById('clear-manifest');
  const dialog = document.getElementById('manifest-dialog');
  const textarea = document.getElementById('manifest-text');

  const term = new window.Terminal({
    screenReaderMode: true,
    cursorBlink: true,
    scrollback: 5000,
    fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace',
    fontSize: 14,
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  try { fit.fit(); } catch (_) { /* hidden */ }

  const url = `wss://${location.host}/shell/socket?cluster=${encodeURIComponent(cluster)}&namespace=${encodeURIComponent(namespace)}`;
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';

  let ready = false;
  let running = false;
  let closed = false;
  let line = '';
  let cursor = 0;
  const history = [];
  let hpos = 0;
  let manifest = null;

  const setStatus = (text) => { status.textContent = text; };
  // How many commands have ended (or were refused): what tests and assistive tools wait on.
  let done = 0;
  const ended = () => { done += 1; el.dataset.done = String(done); el.dataset.state = 'ready'; };
  const send = (msg) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); };
  const prompt = () => `\x1b[1;34m${cluster}\x1b[0m:\x1b[36m${namespace}\x1b[0m$ `;
  const redraw = () => {
    term.write(`\r\x1b[K${prompt()}${line}`);
    const back = line.length - cursor;
    if (back > 0) term.write(`\x1b[${back}D`);
  };
  const newPrompt = (then) => {
    line = '';
    cursor = 0;
    hpos = history.length;
    term.write(`\r\x1b[K${prompt()}`, then);
  };
  const insert = (text) => {
    line = line.slice(0, cursor) + text + line.slice(cursor);
    cursor += text.length;
    redraw();
  };

  const submit = () => {
    term.write('\r\n');
    const text = line;
    line = '';
    cursor = 0;
    if (!text.trim()) { redraw(); return; }
    if (history[history.length - 1] !== text) history.push(text);
    hpos = history.length;
    running = true;
    const msg = { t: 'run', line: text };
    if (manifest !== null) msg.stdin = manifest;
    send(msg);
  };

  const edit = (data) => {
    switch (data) {
      case '\r': submit(); return;
      case '\x7f': case '\b':
        if (cursor > 0) { line = line.slice(0, cursor - 1) + line.slice(cursor); cursor -= 1; redraw(); }
        return;
      case '\x1b[3~':
        if (cursor < line.length) { line = line.slice(0, cursor) + line.slice(cursor + 1); redraw(); }
        return;
      case '\x1b[D': if (cursor > 0) { cursor -= 1; redraw(); } return;
      case '\x1b[C': if (cursor < line.length) { cursor += 1; redraw(); } return;
      case '\x1b[H': case '\x1bOH': case '\x01': cursor = 0; redraw(); return;
      case '\x1b[F': case '\x1bOF': case '\x05': cursor = line.length; redraw(); return;
      case '\x1b[A':
        if (hpos > 0) { hpos -= 1; line = history[hpos]; cursor = line.length; redraw(); }
        return;
      case '\x1b[B':
        if (hpos < history.length) {
          hpos += 1;
          line = hpos < history.length ? history[hpos] : '';
          cursor = line.length;
          redraw();
        }
        return;
      case '\x03': term.write('^C\r\n'); newPrompt(); return;
      case '\x15': line = line.slice(cursor); cursor = 0; redraw(); return;
      case '\x0c': term.clear(); redraw(); return;
      default:
        if (data.startsWith('\x1b')) return;
        // Typed or pasted text: one line (a pasted newline runs nothing by itself).
        insert(data.replace(/\r?\n|\r/g, ' ').replace(/[\x00-\x1f\x7f]/g, ''));
    }
  };

  term.onData((data) => {
    if (!ready || closed) return;
    if (running) send({ t: 'input', data });
    else edit(data);
  });
  term.onResize(({ cols, rows }) => send({ t: 'resize', cols, rows }));
  window.addEventListener('resize', () => { try { fit.fit(); } catch (_) { /* hidden */ } });

  ws.addEventListener('open', () => {
    send({ t: 'hello', csrf, cols: term.cols, rows: term.rows });
  });
  ws.addEventListener('message', (event) => {
    if (typeof event.data !== 'string') {
      term.write(new Uint8Array(event.data));
      return;
    }
    let msg;
    try { msg = JSON.parse(event.data); } catch (_) { return; }
    switch (msg.t) {
      case 'ready':
        ready = true;
        setStatus(`Connected to ${msg.cluster} as ${msg.user}, namespace ${msg.namespace}`);
        el.dataset.state = 'ready';
        el.dataset.done = '0';
        term.write(`\x1b[2mkubectl on ${msg.cluster}, audited (access method browser). Confined by ${msg.confinement}.\x1b[0m\r\n`);
        newPrompt();
        term.focus();
        break;
      case 'started':
        running = true;
        el.dataset.state = 'running';
        break;
      case 'exit':
        running = false;
        if (msg.reason) term.write(`\r\n\x1b[33m[${msg.reason}]\x1b[0m`);
        if (msg.code) term.write(`\r\n\x1b[2m[exit ${msg.code}]\x1b[0m`);
        term.write('\r\n');
        newPrompt(ended);
        break;
      case 'refused':
        running = false;
        term.write(`\x1b[31mrefused: ${msg.reason}\x1b[0m\r\n`);
        newPrompt(ended);
        break;
      case 'notice':
        term.write(`\r\n\x1b[33m${msg.text}\x1b[0m\r\n`);
        if (!running) redraw();
        break;
      case 'closed':
        closed = true;
        setStatus(`Closed: ${msg.reason}`);
        term.write(`\r\n\x1b[31m[shell closed: ${msg.reason}]\x1b[0m\r\n`);
        break;
      default:
        break;
    }
  });
  ws.addEventListener('close', () => {
    const was = closed;
    closed = true;
    el.dataset.state = 'closed';
    if (!was) {
      setStatus('Disconnected');
      term.write('\r\n\x1b[31m[shell disconnected; reload the page to open a new one]\x1b[0m\r\n');
    }
  });

  // The manifest: the input of the next `-f -`.
  const setManifest = (text, from) => {
    manifest = text && text.trim() ? text : null;
    if (manifest === null) {
      manifestState.textContent = 'No manifest pasted';
      clearButton.hidden = true;
      return;
    }
    const lines = manifest.split('\n').length;
    manifestState.textContent = `Manifest ready (${lines} lines${from ? `, ${from}` : ''}): used by -f -`;
    clearButton.hidden = false;
  };
  document.getElementById('paste-manifest').addEventListener('click', () => {
    textarea.value = manifest || '';
    dialog.showModal();
    textarea.focus();
  });
  dialog.addEventListener('close', () => {
    if (dialog.returnValue === 'use') setManifest(textarea.value, 'pasted');
    term.focus();
  });
  clearButton.addEventListener('click', () => { setManifest(null); term.focus(); });
  el.addEventListener('dragover', (e) => { e.preventDefault(); el.classList.add('drop'); });
  el.addEventListener('dragleave', () => el.classList.remove('drop'));
  el.addEventListener('drop', async (e) => {
    e.preventDefault();
    el.classList.remove('drop');
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (!file) return;
    if (file.size > 1024 * 1024) {
      term.write(`\r\n\x1b[31m${file.name} is larger than 1 MiB\x1b[0m\r\n`);
      if (!running) redraw();
      return;
    }
    setManifest(await file.text(), file.name);
    term.focus();
  });
})();
