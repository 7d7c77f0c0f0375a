// Keel's GraphiQL: queries and mutations over POST /graphql, subscriptions over graphql-ws on
// /graphql/ws with the headers editor's Authorization in the connection_init payload. The URL
// keeps the editors' state (?query=&variables=&operationName=), and a query given in the URL
// runs when the page opens (queries only: a link never runs a mutation or a subscription).
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("keel-config").textContent);
  var params = new URLSearchParams(window.location.search);
  var wsUrl = (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + config.subscriptionEndpoint;

  function authorization(headers) {
    for (var name in headers || {}) {
      if (name.toLowerCase() === "authorization") return headers[name];
    }
    return null;
  }

  function operationOf(document, operationName) {
    if (!document) return null;
    var ops = document.definitions.filter(function (d) { return d.kind === "OperationDefinition"; });
    if (operationName) ops = ops.filter(function (d) { return d.name && d.name.value === operationName; });
    return ops.length === 1 ? ops[0].operation : null;
  }

  function subscribe(request, headers) {
    return {
      subscribe: function (sink) {
        var auth = authorization(headers);
        var client = graphqlWs.createClient({
          url: wsUrl,
          lazy: true,
          retryAttempts: 0,
          connectionParams: auth ? { Authorization: auth } : {},
        });
        var fail = function (e) {
          if (e && typeof e.code === "number") {
            e = new Error("the subscription socket closed: " + e.code + " " + (e.reason || ""));
          }
          sink.error(e);
        };
        var dispose = client.subscribe(request, { next: function (v) { sink.next(v); }, error: fail, complete: function () { sink.complete(); } });
        return { unsubscribe: function () { dispose(); client.dispose(); } };
      },
    };
  }

  function fetcher(request, opts) {
    var headers = (opts && opts.headers) || {};
    if (operationOf(opts && opts.documentAST, request.operationName) === "subscription") {
      return subscribe(request, headers);
    }
    var sent = { "Content-Type": "application/json", Accept: "application/graphql-response+json, application/json" };
    for (var name in headers) sent[name] = headers[name];
    return fetch(config.endpoint, { method: "POST", headers: sent, body: JSON.stringify(request) }).then(function (r) {
      return r.text().then(function (text) {
        try { return JSON.parse(text); } catch (_) { return { errors: [{ message: r.status + " " + text }] }; }
      });
    });
  }

  function remember(name, value) {
    var p = new URLSearchParams(window.location.search);
    if (value) p.set(name, value); else p.delete(name);
    var search = p.toString();
    window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
  }

  // Runs the URL's query once, when it is read-only (every operation a query).
  function readOnly(text) {
    try {
      var doc = GraphiQL.GraphQL.parse(text);
      var ops = doc.definitions.filter(function (d) { return d.kind === "OperationDefinition"; });
      return ops.length > 0 && ops.every(function (d) { return d.operation === "query"; });
    } catch (_) {
      return false;
    }
  }
  var pending = params.get("query") && readOnly(params.get("query"));
  function AutoRun() {
    var execution = GraphiQL.React.useExecutionContext({ nonNull: true });
    var editors = GraphiQL.React.useEditorContext({ nonNull: true });
    React.useEffect(function () {
      if (pending && editors.queryEditor) {
        pending = false;
        execution.run();
      }
    }, [editors.queryEditor]);
    return null;
  }

  var props = {
    fetcher: fetcher,
    defaultEditorToolsVisibility: config.token ? "headers" : undefined,
    shouldPersistHeaders: false,
    onEditQuery: function (v) { remember("query", v); },
    onEditVariables: function (v) { remember("variables", v); },
    onEditOperationName: function (v) { remember("operationName", v); },
  };
  if (params.get("query") !== null) props.query = params.get("query");
  if (params.get("variables") !== null) props.variables = params.get("variables");
  if (params.get("operationName") !== null) props.operationName = params.get("operationName");
  if (config.token) props.headers = JSON.stringify({ Authorization: "Bearer " + config.token }, null, 2);

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(React.createElement(GraphiQL, props, React.createElement(GraphiQL.Footer, null, React.createElement(AutoRun))));
})();
