"""The Swagger UI page served at /docs, which renders the OpenAPI document at /openapi.json."""

from __future__ import annotations

from typing import Final

SWAGGER_UI_VERSION: Final = "5.35.0"
"""The swagger-ui-dist release /docs loads; the SRI hashes below are of its files."""
_SWAGGER_JS_SRI: Final = "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9"
_SWAGGER_CSS_SRI: Final = "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I"
_CDN: Final = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"

# The browser loads Swagger UI from a public CDN (a pinned release, checked by Subresource
# Integrity), so the server ships no JavaScript; offline viewers read /openapi.json instead.
SWAGGER_UI: Final[bytes] = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>modelport API</title>
<!-- Swagger UI {SWAGGER_UI_VERSION} comes from a CDN: this page needs internet access in the
     browser. Without it, read the API description at /openapi.json. -->
<link rel="stylesheet" href="{_CDN}/swagger-ui.css"
  integrity="{_SWAGGER_CSS_SRI}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"><noscript>This page needs JavaScript; the API description is at
<a href="/openapi.json">/openapi.json</a>.</noscript></div>
<script src="{_CDN}/swagger-ui-bundle.js"
  integrity="{_SWAGGER_JS_SRI}" crossorigin="anonymous"></script>
<script>
window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui"}});
</script>
</body>
</html>
""".encode()
"""The HTML page served at /docs."""
