// Mounts GraphiQL. A file rather than an inline script: the page's CSP is `script-src 'self'`.
// The server writes the settings into <script type="application/json" id="graphiql-config">.
(function () {
  'use strict';

  var config = JSON.parse(document.getElementById('graphiql-config').textContent);
  var overHttp = GraphiQL.createFetcher({ url: config.endpoint });
  var socketUrl = location.origin.replace(/^http/, 'ws') + config.endpoint;

  // Whether the operation to run is a subscription.
  function isSubscription(params, options) {
    var ast = options && options.documentAST;
    if (!ast) return false;
    return ast.definitions.some(function (definition) {
      return (
        definition.kind === 'OperationDefinition' &&
        definition.operation === 'subscription' &&
        (!params.operationName || (definition.name && definition.name.value === params.operationName))
      );
    });
  }

  // Queries and mutations over HTTP; subscriptions over the WebSocket at the same
  // path (graphql-transport-ws), one connection each, signed in with the headers
  // the editor holds, which the server reads from connection_init.
  function fetcher(params, options) {
    if (!isSubscription(params, options)) return overHttp(params, options);
    var client = graphqlWs.createClient({
      url: socketUrl,
      connectionParams: (options && options.headers) || {},
      retryAttempts: 0,
    });
    var results = client.iterate(params);
    var iterator = {
      next: function () {
        return results.next();
      },
      return: function () {
        client.dispose();
        return results.return ? results.return() : Promise.resolve({ done: true, value: undefined });
      },
    };
    iterator[Symbol.asyncIterator] = function () {
      return iterator;
    };
    return iterator;
  }

  var props = {
    fetcher: fetcher,
    defaultQuery: config.query,
    // Headers may hold a token: keep them out of localStorage.
    shouldPersistHeaders: false,
    // Open on the headers editor, so a newcomer sees where the token goes.
    defaultEditorToolsVisibility: 'headers',
  };
  if (config.headers) {
    // `headers` fills the open tab even when tabs were restored from an earlier visit;
    // `defaultHeaders` fills new tabs.
    props.headers = config.headers;
    props.defaultHeaders = config.headers;
  }

  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, props)
  );
})();
