// Keel's REST explorer: Swagger UI over /api/v1/openapi.json, with "try it out" on and, under
// `keel up`, the development token already in the Authorize box.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("keel-config").textContent);
  window.ui = SwaggerUIBundle({
    url: config.openapi,
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    persistAuthorization: false,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    onComplete: function () {
      if (config.token) window.ui.preauthorizeApiKey("bearer", config.token);
    },
  });
})();
