// Mounts GraphiQL. A file rather than an inline script: the page's CSP is `script-src 'self'`.
// The server writes the settings into <script type="application/json" id="graphiql-config">.
(function () {
  'use strict';

  var config = JSON.parse(document.getElementById('graphiql-config').textContent);
  var props = {
    fetcher: GraphiQL.createFetcher({ url: config.endpoint }),
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
