// What is wrong with the page's layout: every rendered Bokeh/Panel component (an element with a shadow root)
// that sticks out of the window, overlaps another that is not its ancestor or descendant, or (a table, tabs, a
// text area or an editor) is squeezed narrower than it can be used. Returns one line per problem.
() => {
  const problems = [];
  const width = document.documentElement.clientWidth;
  const hosts = [];
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    const st = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && st.visibility !== "hidden" && st.display !== "none" &&
      st.position !== "absolute" && st.position !== "fixed";
  };
  const name = (el) => el.className.toString().replace(/bk-panel-models-/g, "").slice(0, 60);
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (!el.shadowRoot) continue;
      walk(el.shadowRoot);
      if (shown(el)) hosts.push([el, el.getBoundingClientRect()]);
    }
  };
  const inside = (a, b) => { for (let n = b; n; n = n.parentNode || n.host) if (n === a) return true; return false; };
  walk(document);
  for (const [el, r] of hosts) {
    if (r.right > width + 1 || r.left < -1) problems.push(`outside the window: ${name(el)}`);
    if (/Tabulator|Tabs|CodeEditor|TextAreaInput|ChatAreaInput/.test(el.className.toString()) && r.width < 200) {
      problems.push(`squeezed to ${Math.round(r.width)} px: ${name(el)}`);
    }
  }
  for (let i = 0; i < hosts.length; i++) {
    for (let j = i + 1; j < hosts.length; j++) {
      const [a, ra] = hosts[i];
      const [b, rb] = hosts[j];
      if (inside(a, b) || inside(b, a)) continue;
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 2 && h > 2) problems.push(`overlapping: ${name(a)} and ${name(b)}`);
    }
  }
  return problems;
}
