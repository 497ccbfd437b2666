// distillguard console: the campaign page's account graph (cytoscape, vendored beside this file).
// No inline script: the CSP allows scripts from this origin only; data comes from graph.json.
"use strict";
(function () {
  var COLOURS = {payment: "#b91c1c", ip: "#1d4ed8", subnet: "#60a5fa", user_agent: "#7c3aed",
                 signup_burst: "#db2777", scaffold: "#059669", system_prompt: "#d97706", sync: "#475569"};
  var ACTIONS = {block: "#7f1d1d", throttle: "#c2410c", fallback: "#b45309", monitor: "#1d4ed8", allow: "#15803d"};

  function legend(list, kinds, used) {
    kinds.forEach(function (k) {
      if (!used[k]) { return; }
      var li = document.createElement("li");
      li.className = k;
      li.textContent = k.replace(/_/g, " ") + " (" + used[k] + ")";
      list.appendChild(li);
    });
  }

  function draw(box) {
    fetch(box.dataset.graphUrl, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (g) {
      var used = {};
      g.edges.forEach(function (e) { used[e.data.kind] = (used[e.data.kind] || 0) + 1; });
      var cy = cytoscape({
        container: box,
        elements: g.nodes.concat(g.edges),
        style: [
          {selector: "node", style: {"background-color": function (n) { return ACTIONS[n.data("action")] || "#64748b"; },
                                      "label": function (n) { return n.id().slice(-6); }, "font-size": 7,
                                      "color": "#55606e", "width": 12, "height": 12}},
          {selector: "edge", style: {"line-color": function (e) { return COLOURS[e.data("kind")] || "#888"; },
                                      "width": function (e) { return Math.min(1 + e.data("weight") / 2, 6); },
                                      "opacity": 0.7, "curve-style": "haystack"}}
        ],
        layout: {name: "cose", animate: false, randomize: false, idealEdgeLength: function () { return 90; },
                 nodeRepulsion: function () { return 400000; }, padding: 20}
      });
      cy.on("tap", "node", function (evt) { window.location.href = "/accounts/" + encodeURIComponent(evt.target.id()); });
      box.dataset.nodes = String(g.nodes.length);
      box.dataset.edges = String(g.edges.length);
      legend(document.getElementById("graph-legend"), g.kinds, used);
      box.classList.add("drawn");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("graph");
    if (box && window.cytoscape) { draw(box); }
  });
})();
