// The site's search box. It works from disk (file://) as well as from a web server: the index is
// a script (search/search_index.js, written by docs/hooks/search_index.py) loaded with a
// <script> tag on first use, not fetched, and the search runs here, in the page.
(function () {
  "use strict";

  var script = document.currentScript;
  // The site's root, from this script's own address (<root>/js/search.js).
  var root = script ? script.src.replace(/js\/search\.js(\?.*)?$/, "") : "";
  var MAX_RESULTS = 30;
  var loading = null;

  function loadIndex(then) {
    if (window.elefastSearchIndex) { then(); return; }
    if (loading) { loading.push(then); return; }
    loading = [then];
    var tag = document.createElement("script");
    tag.src = root + "search/search_index.js";
    tag.onload = function () { var waiting = loading; loading = null; waiting.forEach(function (f) { f(); }); };
    tag.onerror = function () { loading = null; };
    document.head.appendChild(tag);
  }

  function terms(query) {
    return query.toLowerCase().split(/[^\w.\-]+/).filter(function (t) { return t.length > 0; });
  }

  function count(haystack, needle) {
    var n = 0, at = haystack.indexOf(needle);
    while (at !== -1 && n < 50) { n += 1; at = haystack.indexOf(needle, at + needle.length); }
    return n;
  }

  // Every term must occur in the section's title or text; title hits weigh more.
  function search(query) {
    var wanted = terms(query);
    if (!wanted.length) { return []; }
    var found = [];
    window.elefastSearchIndex.forEach(function (section) {
      var title = (section.title + " " + section.page).toLowerCase();
      var text = section.text.toLowerCase();
      var score = 0;
      for (var i = 0; i < wanted.length; i += 1) {
        var inTitle = count(title, wanted[i]), inText = count(text, wanted[i]);
        if (!inTitle && !inText) { return; }
        score += 10 * inTitle + inText;
      }
      found.push({ section: section, score: score });
    });
    found.sort(function (a, b) { return b.score - a.score; });
    return found.slice(0, MAX_RESULTS).map(function (f) { return f.section; });
  }

  // A piece of the text around the first term found, with the terms marked.
  function snippet(text, wanted) {
    var lower = text.toLowerCase(), at = -1;
    for (var i = 0; i < wanted.length && at === -1; i += 1) { at = lower.indexOf(wanted[i]); }
    var start = Math.max(0, at - 60);
    var piece = (start > 0 ? "\u2026" : "") + text.slice(start, start + 200) + (text.length > start + 200 ? "\u2026" : "");
    var out = document.createElement("span");
    var pattern = new RegExp("(" + wanted.map(function (t) {
      return t.replace(/[.*+?^${}()|[\]\\\-]/g, "\\$&");
    }).join("|") + ")", "gi");
    piece.split(pattern).forEach(function (part, index) {
      if (index % 2) {
        var mark = document.createElement("mark");
        mark.textContent = part;
        out.appendChild(mark);
      } else {
        out.appendChild(document.createTextNode(part));
      }
    });
    return out;
  }

  function build() {
    var header = document.querySelector(".md-header__inner");
    if (!header) { return; }
    var box = document.createElement("div");
    box.className = "elefast-search";
    box.setAttribute("role", "search");
    var input = document.createElement("input");
    input.type = "search";
    input.className = "elefast-search__input";
    input.placeholder = "Search";
    input.setAttribute("aria-label", "Search the documentation");
    input.autocomplete = "off";
    var results = document.createElement("ol");
    results.className = "elefast-search__results";
    results.hidden = true;
    box.appendChild(input);
    box.appendChild(results);
    header.appendChild(box);

    function show() {
      var query = input.value.trim();
      results.textContent = "";
      if (!query) { results.hidden = true; return; }
      var wanted = terms(query);
      var found = search(query);
      if (!found.length) {
        var none = document.createElement("li");
        none.className = "elefast-search__none";
        none.textContent = "No page mentions \u201c" + query + "\u201d.";
        results.appendChild(none);
      }
      found.forEach(function (section) {
        var item = document.createElement("li");
        var link = document.createElement("a");
        link.href = root + section.location;
        var title = document.createElement("strong");
        title.textContent = section.title === section.page ? section.page : section.page + " \u203a " + section.title;
        link.appendChild(title);
        link.appendChild(snippet(section.text, wanted));
        item.appendChild(link);
        results.appendChild(item);
      });
      results.hidden = false;
    }

    input.addEventListener("focus", function () { loadIndex(function () { if (input.value.trim()) { show(); } }); });
    input.addEventListener("input", function () { loadIndex(show); });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { input.value = ""; results.hidden = true; input.blur(); }
      if (event.key === "Enter") {
        var first = results.querySelector("a");
        if (first) { window.location.href = first.href; }
      }
    });
    document.addEventListener("keydown", function (event) {
      var typing = /^(input|textarea|select)$/i.test((event.target && event.target.tagName) || "");
      if (event.key === "/" && !typing) { event.preventDefault(); input.focus(); }
    });
    document.addEventListener("click", function (event) {
      if (!box.contains(event.target)) { results.hidden = true; }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", build);
  } else {
    build();
  }
})();
